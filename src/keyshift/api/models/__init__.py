"""Response models of the REST API: one module per object, each describing exactly the shape the
service layer gives (and the CLI prints with `--json`); docs/API.md "Object shapes".

Models refuse fields they do not declare (`extra="forbid"`), so a view that grows a field without
its model answers 500 in the tests instead of silently leaving it out of the documented shape.
"""
