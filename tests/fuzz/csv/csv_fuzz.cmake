# --- CSV import: RFC 4180 reader, mapping by reflection, error report -------
# Included from tests/fuzz/CMakeLists.txt (uses its icr_fuzz_target helper).
# nlohmann/json is header-only from the system include path.
icr_fuzz_target(csv_fuzz
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/csv_fuzz.cc
  PROJECT_SOURCES adapters/csv/csv_reader.cc adapters/csv/csv_formats.cc
                  adapters/csv/csv_mapping.cc adapters/csv/csv_import.cc adapters/csv/sha256.cc
  CORPUS ${CMAKE_CURRENT_LIST_DIR}/corpus
  DICT ${CMAKE_CURRENT_LIST_DIR}/csv.dict
  MAX_LEN 16384)
