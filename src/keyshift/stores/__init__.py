"""keyshift.stores"""
