"""Feed DICOM from a PACS: pull series (DIMSE or DICOMweb) or listen as a DICOM node, and send the DICOM-SEG back."""
