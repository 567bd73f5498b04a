#!/usr/bin/env python3
"""Writes server/src/extract/pdf/cid2unicode.bin: CID to Unicode for the four
Adobe CJK collections, from Adobe's cid2code.txt tables (BSD-3, © Adobe), as
shipped in the PyPI sdist of pdfminer.six (folder cmaprsrc/).

Layout: for Japan1, GB1, CNS1, Korea1 in that order, a little-endian u32
count N, then N little-endian u32 code points indexed by CID (0 for none).
Where a CID lists several code points, the last (the plain ASCII or
base form, as poppler-data's cidToUnicode files have it) is taken.

Run:  scripts/gen-cid-tables.py CMAPRSRC_DIR > server/src/extract/pdf/cid2unicode.bin
"""
import os
import struct
import sys

src = sys.argv[1]
out = sys.stdout.buffer
for coll, column in [("Japan1", "UniJIS-UTF32"), ("GB1", "UniGB-UTF32"), ("CNS1", "UniCNS-UTF32"), ("Korea1", "UniKS-UTF32")]:
    table = {}
    header = None
    with open(os.path.join(src, "cid2code_Adobe_%s.txt" % coll), encoding="latin-1") as f:
        for line in f:
            if line.startswith("#"):
                continue
            cols = line.rstrip("\n").split("\t")
            if header is None:
                header = cols
                idx = header.index(column)
                continue
            value = cols[idx] if idx < len(cols) else "*"
            if value == "*":
                continue
            last = value.split(",")[-1].rstrip("v")
            table[int(cols[0])] = int(last, 16)
    n = max(table) + 1
    out.write(struct.pack("<I", n))
    out.write(b"".join(struct.pack("<I", table.get(c, 0)) for c in range(n)))
