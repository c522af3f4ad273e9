"""placeholder"""
def check_hvp(): pass
