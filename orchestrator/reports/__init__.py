"""What a run writes: JUnit layouts and merging, the JSON and HTML reports, the text
summary and progress line, atomic file writes.
"""
