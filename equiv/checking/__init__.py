"""One cell's records against the reference: comparison at the derived tolerances, the
verdict (explanations proven by a reference variant), and where a failure first starts.
"""
