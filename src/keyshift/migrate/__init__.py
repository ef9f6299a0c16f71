"""keyshift.migrate"""
