from keyshift.db import schema
from keyshift.runtime import Runtime


def test_home_initialises_schema_to_head_on_each_backend(rt: Runtime) -> None:
    assert schema.current_revision(rt.engine) == schema.head_revision()
