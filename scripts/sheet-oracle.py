#!/usr/bin/env python3
"""The spreadsheet oracle: reads a file with the reference reader users
trust for its format and prints every non-empty cell as canonical JSON, for
the fidelity test (server/src/extract/sheet/corpus.rs) to compare with ours.

  sheet-oracle.py FORMAT FILE   (FORMAT: xlsx xlsm xlsb xls ods csv)

Readers: openpyxl (data_only=True) for xlsx/xlsm, xlrd 2 for xls, odfpy for
ods, pyxlsb for xlsb, the csv module for CSV. Output:
  {"reader": "openpyxl 3.1.5",
   "sheets": [{"name": ..., "cells": [[row, col, value], ...],
               "merged": [[first_row, first_col, last_row, last_col], ...]}]}
or {"reader": ..., "error": "..."} when the reader cannot read the file.
Rows and columns are 0-based and absolute. Values: numbers, strings,
booleans, {"date": "YYYY-MM-DD[THH:MM:SS[.mmm]]"}, {"time": "HH:MM:SS[.mmm]"},
{"duration": seconds}, {"error": "#N/A"}. xlsb dates are serial numbers:
pyxlsb does not read number formats.

This script only translates each reader's own values into that shape; the
decisions (what is a date, a time, a string) are the reader's.
"""
import datetime
import io
import json
import re
import sys


def clock(h, m, s, micro):
    ms = round(micro / 1000)
    base = f"{h:02}:{m:02}:{s:02}"
    return f"{base}.{ms:03}" if ms else base


def iso(dt):
    """A datetime as the test writes it: the date alone at midnight."""
    # Round to milliseconds, as Excel stores them.
    micro = round(dt.microsecond / 1000) * 1000
    if micro == 1_000_000:
        dt = dt.replace(microsecond=0) + datetime.timedelta(seconds=1)
        micro = 0
    else:
        dt = dt.replace(microsecond=micro)
    if (dt.hour, dt.minute, dt.second, dt.microsecond) == (0, 0, 0, 0):
        return {"date": dt.strftime("%Y-%m-%d")}
    return {"date": dt.strftime("%Y-%m-%dT") + clock(dt.hour, dt.minute, dt.second, micro)}


def time_of_day(t):
    return {"time": clock(t.hour, t.minute, t.second, t.microsecond)}


def number(v):
    return float(v)


def openpyxl_sheets(path):
    import openpyxl
    from openpyxl.utils.escape import unescape

    try:
        wb = openpyxl.load_workbook(path, data_only=True)
        keeps_merged = True
    except Exception:
        # Read-only mode skips the parts (drawings, styles, relationships)
        # that some writers leave out or get wrong; it does not keep merges.
        wb = openpyxl.load_workbook(path, data_only=True, read_only=True)
        keeps_merged = False
    out = []
    for ws in wb.worksheets:
        if not keeps_merged:
            ws.reset_dimensions()  # a read-only sheet trusts its declared extent otherwise
        cells = []
        for row in ws.iter_rows():
            for c in row:
                v = c.value
                if v is None or not hasattr(c, "column"):
                    continue
                if c.data_type == "e":
                    v = {"error": v}
                elif isinstance(v, bool):
                    pass
                elif isinstance(v, (int, float)):
                    v = number(v)
                elif isinstance(v, datetime.datetime):
                    v = iso(v)
                elif isinstance(v, datetime.date):
                    v = {"date": v.isoformat()}
                elif isinstance(v, datetime.time):
                    v = time_of_day(v)
                elif isinstance(v, datetime.timedelta):
                    v = {"duration": v.total_seconds()}
                elif isinstance(v, str):
                    if v == "":
                        continue
                    # ECMA-376 _xHHHH_ escapes: openpyxl's string reader drops
                    # "x005F_" (so a literal "_x000D_" reads right) but leaves
                    # real escapes raw, so its text is one of two readings.
                    if ESCAPE.search(v):
                        v = {"xstring": [v, unescape(v)]}
                else:
                    v = str(v)
                cells.append([c.row - 1, c.column - 1, v])
        merged = [
            [r.min_row - 1, r.min_col - 1, r.max_row - 1, r.max_col - 1]
            for r in ws.merged_cells.ranges
        ] if keeps_merged else None
        out.append({"name": ws.title, "cells": cells, "merged": merged})
    return out, "openpyxl " + openpyxl.__version__


ESCAPE = re.compile(r"_x[0-9A-Fa-f]{4}_")

# Elapsed-time formats ([h], [mm], [ss]) are durations, not dates.
ELAPSED = re.compile(r"\[(h+|m+|s+)\]", re.I)


def xlrd_sheets(path):
    import xlrd

    book = xlrd.open_workbook(path, formatting_info=True, logfile=sys.stderr)
    out = []
    for sh in book.sheets():
        cells = []
        for r in range(sh.nrows):
            for c in range(sh.ncols):
                cell = sh.cell(r, c)
                t, v = cell.ctype, cell.value
                if t in (xlrd.XL_CELL_EMPTY, xlrd.XL_CELL_BLANK):
                    continue
                if t == xlrd.XL_CELL_TEXT:
                    if v == "":
                        continue
                elif t == xlrd.XL_CELL_NUMBER:
                    v = number(v)
                elif t == xlrd.XL_CELL_BOOLEAN:
                    v = bool(v)
                elif t == xlrd.XL_CELL_ERROR:
                    v = {"error": xlrd.error_text_from_code.get(v, f"#ERR{v}")}
                elif t == xlrd.XL_CELL_DATE:
                    xf = book.xf_list[cell.xf_index]
                    fmt = book.format_map[xf.format_key].format_str or ""
                    if ELAPSED.search(fmt):
                        v = {"duration": v * 86400.0}
                    elif 0 <= v < 1:
                        v = time_of_day(xlrd.xldate.xldate_as_datetime(v, book.datemode))
                    else:
                        v = iso(xlrd.xldate.xldate_as_datetime(v, book.datemode))
                cells.append([r, c, v])
        merged = [[rlo, clo, rhi - 1, chi - 1] for rlo, rhi, clo, chi in sh.merged_cells]
        out.append({"name": sh.name, "cells": cells, "merged": merged})
    return out, "xlrd " + xlrd.__VERSION__


XLSB_ERRORS = {
    0x00: "#NULL!",
    0x07: "#DIV/0!",
    0x0F: "#VALUE!",
    0x17: "#REF!",
    0x1D: "#NAME?",
    0x24: "#NUM!",
    0x2A: "#N/A",
    0x2B: "#GETTING_DATA",
}


def pyxlsb_sheets(path):
    import pyxlsb
    from pyxlsb import open_workbook

    out = []
    with open_workbook(path) as wb:
        # Chart sheets hold no cells (openpyxl and xlrd do not list them).
        charts = {n for n, part in wb._sheets if "chartsheets/" in part}
        for name in wb.sheets:
            if name in charts:
                continue
            cells = []
            with wb.get_sheet(name) as sh:
                for row in sh.rows(sparse=True):
                    for c in row:
                        v = c.v
                        if v is None or v == "":
                            continue
                        if isinstance(v, bool):
                            pass
                        elif isinstance(v, (int, float)):
                            v = number(v)
                        elif isinstance(v, str) and re.fullmatch(r"0x[0-9a-f]+", v):
                            # pyxlsb gives error cells as their code in hex.
                            v = {"error": XLSB_ERRORS.get(int(v, 16), v)}
                        cells.append([c.r, c.c, v])
            out.append({"name": name, "cells": cells, "merged": None})
    return out, "pyxlsb " + pyxlsb.__version__


def odf_text(node):
    """The text of a cell's paragraphs as a spreadsheet shows it."""
    from odf.element import Element, Text

    parts = []

    def walk(n):
        for ch in n.childNodes:
            if isinstance(ch, Text) or ch.nodeType == ch.TEXT_NODE:
                parts.append(str(ch.data))
            elif isinstance(ch, Element):
                tag = ch.qname[1]
                if tag == "s":
                    parts.append(" " * int(ch.getAttribute("c") or 1))
                elif tag == "tab":
                    parts.append("\t")
                elif tag == "line-break":
                    parts.append("\n")
                elif tag == "annotation":
                    continue
                else:
                    walk(ch)

    paras = []
    for ch in node.childNodes:
        if isinstance(ch, Element) and ch.qname[1] in ("p", "h"):
            parts.clear()
            walk(ch)
            paras.append("".join(parts))
    return "\n".join(paras)


# ISO 8601 durations as ODF writes them: PT12H30M00S, P1DT2H, -PT1H.
DURATION = re.compile(r"(-)?P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?)?")

# Repeats beyond this are the format's way of saying "to the sheet's end".
MAX_REPEAT = 1 << 16


def odf_sheets(path):
    from odf.opendocument import load
    from odf.namespaces import OFFICENS, TABLENS
    from odf.element import Element

    doc = load(path)
    out = []
    # Walked by hand: odfpy's doc.spreadsheet and getElementsByType stop at
    # the whitespace text nodes some writers (KSpread) leave between elements.
    body = next(
        e for e in doc.body.childNodes
        if isinstance(e, Element) and e.qname == (OFFICENS, "spreadsheet")
    )
    tables = [
        t for t in body.childNodes
        if isinstance(t, Element) and t.qname == (TABLENS, "table")
    ]
    for table in tables:
        name = table.getAttribute("name")
        cells, merged = [], []
        r = 0

        def rows_of(node):
            for ch in node.childNodes:
                if not isinstance(ch, Element):
                    continue
                tag = ch.qname[1]
                if tag == "table-row":
                    yield ch
                elif tag in ("table-row-group", "table-header-rows", "table-rows"):
                    yield from rows_of(ch)

        for row in rows_of(table):
            rrep = int(row.attributes.get((TABLENS, "number-rows-repeated"), 1))
            row_cells = []
            c = 0
            for cell in row.childNodes:
                if not isinstance(cell, Element):
                    continue
                tag = cell.qname[1]
                if tag not in ("table-cell", "covered-table-cell"):
                    continue
                crep = int(cell.attributes.get((TABLENS, "number-columns-repeated"), 1))
                a = cell.attributes
                vt = a.get((OFFICENS, "value-type"))
                v = None
                if vt in ("float", "percentage", "currency"):
                    v = number(a.get((OFFICENS, "value")))
                elif vt == "date":
                    s = a.get((OFFICENS, "date-value"))
                    dt = datetime.datetime.fromisoformat(s)
                    v = iso(dt)
                elif vt == "time":
                    m = DURATION.fullmatch(a.get((OFFICENS, "time-value")))
                    sign, d, h, mi, s = m.groups()
                    secs = (int(d or 0) * 86400 + int(h or 0) * 3600 + int(mi or 0) * 60
                            + float(s or 0)) * (-1 if sign else 1)
                    if 0 <= secs < 86400:
                        micro = round(secs * 1e6)
                        v = {"time": clock(micro // 3_600_000_000, micro // 60_000_000 % 60,
                                           micro // 1_000_000 % 60, micro % 1_000_000)}
                    else:
                        v = {"duration": secs}
                elif vt == "boolean":
                    v = a.get((OFFICENS, "boolean-value")) == "true"
                elif vt == "string":
                    v = a.get((OFFICENS, "string-value"))
                    if v is None:
                        v = odf_text(cell)
                    if v == "":
                        v = None
                elif vt is None and tag == "table-cell":
                    v = odf_text(cell) or None
                cs = int(a.get((TABLENS, "number-columns-spanned"), 1))
                rs = int(a.get((TABLENS, "number-rows-spanned"), 1))
                if tag == "table-cell" and (cs > 1 or rs > 1):
                    merged.append([r, c, r + rs - 1, c + cs - 1])
                if v is not None:
                    if crep > MAX_REPEAT:
                        raise ValueError("a repeated cell with a value spans the sheet")
                    for k in range(crep):
                        row_cells.append([c + k, v])
                c += crep
            if row_cells:
                if rrep > MAX_REPEAT:
                    raise ValueError("a repeated row with values spans the sheet")
                for k in range(rrep):
                    cells.extend([r + k, col, v] for col, v in row_cells)
            r += rrep
        out.append({"name": name, "cells": cells, "merged": merged})
    from odf.namespaces import __version__ as odf_version

    return out, "odfpy " + odf_version


def csv_sheets(path):
    import csv

    raw = open(path, "rb").read()
    for bom, enc in ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if raw.startswith(bom):
            text = raw.decode(enc)
            break
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("cp1252", errors="replace")
    try:
        dialect = csv.Sniffer().sniff(text[:65536], delimiters=",;\t|")
        delimiter = dialect.delimiter
    except csv.Error:
        delimiter = ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    cells = []
    for r, row in enumerate(reader):
        for c, v in enumerate(row):
            if v.strip():
                cells.append([r, c, v])
    return [{"name": "Sheet1", "cells": cells, "merged": []}], "csv (Python %s)" % sys.version.split()[0]


READERS = {
    "xlsx": openpyxl_sheets,
    "xlsm": openpyxl_sheets,
    "xls": xlrd_sheets,
    "xlsb": pyxlsb_sheets,
    "ods": odf_sheets,
    "csv": csv_sheets,
}


def main():
    fmt, path = sys.argv[1], sys.argv[2]
    try:
        sheets, reader = READERS[fmt](path)
        print(json.dumps({"reader": reader, "sheets": sheets}))
    except Exception as e:  # the reader's own refusal is a finding, not a crash
        print(json.dumps({"reader": fmt, "error": f"{type(e).__name__}: {e}"}))


if __name__ == "__main__":
    main()
