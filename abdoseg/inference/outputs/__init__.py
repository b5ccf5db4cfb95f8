"""One case end to end with its optional outputs (case): statistics JSON (statistics), preview PNG (preview),
DICOM-SEG and RTSTRUCT (dicom). Each output's heavy imports load only when it is asked for."""
