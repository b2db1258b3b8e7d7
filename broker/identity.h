// PeerIdentity: who is at the other end of a connection, as its verified
// client certificate says (mutual TLS), whichever listener it came in on
// (gRPC, HL7 MLLP, FHIR HTTP). The policy (broker/governance/policy.h) maps
// it to a principal.
//
// Certificates name the principal in the subject: CN = the principal id
// (e.g. "uhcw-epr"), O = the organisation's ODS code (e.g. "RKB"), OU =
// optionally the team or system. deploy/make-test-pki.sh makes such
// certificates for the demo organisations.
#pragma once

#include <string>

namespace grpc {
class AuthContext;
}
typedef struct x509_st X509;

namespace icr::broker {

struct PeerIdentity {
  // True only when the connection presented a client certificate that the
  // listener verified against its client CA.
  bool authenticated = false;
  std::string common_name;          // subject CN: the principal id
  std::string organisation;         // subject O: ODS code
  std::string organisational_unit;  // subject OU (may be empty)
  std::string peer;                 // the remote address, for logs
  std::string channel;              // "grpc", "mllp", "fhir"
};

// From a gRPC call's auth context (grpc::ServerContextBase::auth_context()).
// Not authenticated when the channel is plaintext or no certificate was
// presented.
PeerIdentity IdentityFromAuthContext(const grpc::AuthContext& context, std::string peer);

// From a verified OpenSSL peer certificate (nullptr: not authenticated).
PeerIdentity IdentityFromCertificate(X509* certificate, std::string peer, std::string channel);

}  // namespace icr::broker
