"""Files in and out: ``images`` (one image per file, masks), ``dicom`` (pixel decoding and numeric attributes),
``tables`` (CSV side tables keyed by file name), ``files`` (the atomic writer every output goes through)."""
