"""UBL 2.1 for e-invoicing destinations: Peppol BIS Billing 3.0 invoices and credit notes built from a
document's metadata (generate.py), and validated before anything is sent (validate.py, peppol.py).

The official artefacts the validation runs are vendored under schemas/ (their provenance and
checksums: schemas/SOURCES.md): the OASIS UBL 2.1 XSDs and CEN/TC 434's EN 16931 UBL validation
XSLT (the Schematron compiled by CEN). The Peppol BIS 3.0 rules are checked by peppol.py.
"""
