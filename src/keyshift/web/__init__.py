"""keyshift.web"""
