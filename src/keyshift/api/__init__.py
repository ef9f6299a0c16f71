"""keyshift.api"""
