"""keyshift.jobs"""
