"""keyshift.cli"""
