# adapters/fhir rest-hook subscriptions: broker subscriptions delivered as
# FHIR R4 backport notification Bundles over HTTP (Boost.Beast client).
# Included from adapters/fhir/CMakeLists.txt: include(resthook.cmake).
# Public header: adapters/fhir/resthook.h.
include_guard(GLOBAL)
find_package(nlohmann_json 3 REQUIRED)

icr_library(icr_adapter_fhir_resthook
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/resthook.cc ${CMAKE_CURRENT_LIST_DIR}/resthook_fhir.cc
  PUBLIC_DEPS icr_broker icr_store icr_proto
  PRIVATE_DEPS nlohmann_json::nlohmann_json Boost::headers Threads::Threads)
