# --- FHIR R4 inbound: strict JSON, mapping, validation, OperationOutcome ------
# Included from tests/fuzz/CMakeLists.txt (uses its icr_fuzz_target helper).
# nlohmann/json is header-only from the system include path.
icr_fuzz_target(fhir_fuzz
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/fhir_fuzz.cc
  PROJECT_SOURCES adapters/fhir/fhir_json.cc adapters/fhir/fhir_mapping.cc
                  adapters/fhir/operation_outcome.cc broker/nhs_number.cc broker/validation.cc
  CORPUS ${CMAKE_CURRENT_LIST_DIR}/corpus
  DICT ${CMAKE_CURRENT_LIST_DIR}/fhir.dict
  MAX_LEN 65536)
