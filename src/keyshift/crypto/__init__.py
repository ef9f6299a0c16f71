"""keyshift.crypto"""
