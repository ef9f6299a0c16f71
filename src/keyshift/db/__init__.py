"""keyshift.db"""
