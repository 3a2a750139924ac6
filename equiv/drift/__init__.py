"""Two runs of the same cells, compared: ``equiv diff OLD NEW`` pairs cells by id and labels
each pair (bitwise identical, rounding drift, regression, fixed, changed explanation, not
comparable), each side judged against its own reference and tolerance. Also the stored
baseline a repository keeps to diff against (``equiv baseline``).
"""
