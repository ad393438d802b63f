"""Terminology: the layer under the profile that says what codes and units mean.

- :mod:`.valuesets` loads the value sets that features map through (FHIR ``ValueSet``
  resources with an ``expansion``, shipped under ``profiles/valuesets/``) and answers
  membership through one index built at load time.
- :mod:`.units` compares and converts quantities in UCUM.
- :mod:`.expand` expands value sets without a shipped expansion on a FHIR terminology server
  (``ValueSet/$expand``), cached on disk with their version.
"""
