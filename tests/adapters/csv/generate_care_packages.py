#!/usr/bin/env python3
"""Writes a Care Director-style care packages export of N rows (default
100,000) to stdout, in the columns of fixtures/care_packages.csv, for load
tests of `icrctl import` (docs/adapters/csv.md, "Throughput").

Every NHS number is from the test range 999 000 0000 - 999 999 9999 and
passes the Modulus 11 check. Dates are in 2025, so none is in the future.

  tests/adapters/csv/generate_care_packages.py 100000 > /tmp/packages-100k.csv
"""
import sys

SERVICES = [("Home Care", "VNA12", "Allied Care, Coventry Branch", "14"),
            ("Residential", "VNB07", "Ashdown House Residential Home", ""),
            ("Home Care", "VNC33", "Careline Homecare Ltd", "7.5"),
            ("Nursing", "VND41", "Willow Park Nursing Home", ""),
            ("Extra Care Housing", "VNE02", "Eden Court Extra Care", "10")]
SURNAMES = ["Abbott", "Bennett", "Chowdhury", "Doyle", "Evans", "Fischer", "Green", "Hussain"]
FORENAMES = ["Margaret", "Harold", "Rahima", "Patrick", "Gwen", "Anna", "Stanley", "Mohammed"]


def test_nhs_numbers():
    stem = 999000000
    while stem < 999999999:
        stem += 1
        digits = str(stem)
        total = sum(int(d) * (10 - i) for i, d in enumerate(digits))
        check = 11 - total % 11
        if check == 11:
            check = 0
        if check != 10:
            yield digits + str(check)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
    out = sys.stdout
    out.write("\ufeffPerson ID,NHS Number,Surname,Forename,Date of Birth,Package ID,Service Type,"
              "Provider Code,Provider Name,Start Date,Planned Hours Per Week,Package Status,"
              "Package Notes,Last Updated\r\n")
    numbers = test_nhs_numbers()
    for i in range(n):
        nhs = next(numbers)
        service, code, name, hours = SERVICES[i % len(SERVICES)]
        day, month = i % 28 + 1, i % 12 + 1
        quoted = '"' + name + '"' if "," in name else name
        out.write(f"P{200000 + i},{nhs[:3]} {nhs[3:6]} {nhs[6:]},{SURNAMES[i % 8]},"
                  f"{FORENAMES[(i // 8) % 8]},01/01/1940,PKG-{500000 + i},{service},{code},"
                  f"{quoted},{day:02d}/{month:02d}/2025,{hours},Active,,"
                  f"{day:02d}/{month:02d}/2025 {8 + i % 10:02d}:{i % 60:02d}\r\n")


if __name__ == "__main__":
    main()
