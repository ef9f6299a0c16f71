"""keyshift.vaults"""
