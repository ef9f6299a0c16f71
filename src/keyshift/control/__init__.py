"""keyshift.control"""
