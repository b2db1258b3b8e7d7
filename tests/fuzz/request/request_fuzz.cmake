# --- gRPC request validation: events, filters, subscription names ----------
# Included from tests/fuzz/CMakeLists.txt (uses its icr_fuzz_target helper).
# The seed corpus is the text-format requests in seeds/, encoded with protoc:
#   protoc --encode=icr.v1.PublishBatchRequest -I proto proto/icr/v1/broker.proto \
#     < tests/fuzz/request/seeds/referral.txtpb > tests/fuzz/request/corpus/referral.bin
# (icr.v1.SubscribeRequest for subscribe.txtpb).
icr_fuzz_target(request_fuzz
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/request_fuzz.cc
  PROJECT_SOURCES broker/validation.cc broker/nhs_number.cc store/status.cc
  CORPUS ${CMAKE_CURRENT_LIST_DIR}/corpus
  MAX_LEN 16384)
