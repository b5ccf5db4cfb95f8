"""Reading and writing: the cases of a folder (cases), raw headers checked before ITK reads (headers), scans read
with clear errors (read), label maps written atomically (write), DICOM series in (dicom), and the one-line
errors every case can end with (errors)."""
