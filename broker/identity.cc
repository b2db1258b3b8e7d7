// PeerIdentity from a gRPC auth context or an OpenSSL certificate; see
// identity.h. The subject is read from the certificate itself (PEM parsed with
// OpenSSL) rather than from gRPC's flattened "x509_subject" string, so that a
// comma or an equals sign inside an attribute cannot be misread.
#include "broker/identity.h"

#include <grpcpp/security/auth_context.h>
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <memory>
#include <string>
#include <string_view>

namespace icr::broker {
namespace {

// The first entry of `nid` in `name`, as UTF-8 ("" when absent).
std::string SubjectEntry(X509_NAME* name, int nid) {
  if (name == nullptr) return {};
  const int index = X509_NAME_get_index_by_NID(name, nid, -1);
  if (index < 0) return {};
  ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, index));
  if (data == nullptr) return {};
  unsigned char* utf8 = nullptr;
  const int n = ASN1_STRING_to_UTF8(&utf8, data);
  if (n < 0) return {};
  std::string out(reinterpret_cast<const char*>(utf8), static_cast<size_t>(n));
  OPENSSL_free(utf8);
  return out;
}

std::string FirstProperty(const grpc::AuthContext& context, const char* name) {
  auto values = context.FindPropertyValues(name);
  if (values.empty()) return {};
  return std::string(values.front().data(), values.front().size());
}

}  // namespace

PeerIdentity IdentityFromCertificate(X509* certificate, std::string peer, std::string channel) {
  PeerIdentity id;
  id.peer = std::move(peer);
  id.channel = std::move(channel);
  if (certificate == nullptr) return id;
  X509_NAME* subject = X509_get_subject_name(certificate);
  id.common_name = SubjectEntry(subject, NID_commonName);
  id.organisation = SubjectEntry(subject, NID_organizationName);
  id.organisational_unit = SubjectEntry(subject, NID_organizationalUnitName);
  id.authenticated = true;
  return id;
}

PeerIdentity IdentityFromAuthContext(const grpc::AuthContext& context, std::string peer) {
  PeerIdentity id;
  id.peer = std::move(peer);
  id.channel = "grpc";
  // gRPC sets a peer identity only when the TLS handshake verified a client
  // certificate (plaintext and server-only TLS have none).
  if (!context.IsPeerAuthenticated()) return id;
  if (FirstProperty(context, "transport_security_type") != "ssl") return id;
  const std::string pem = FirstProperty(context, "x509_pem_cert");
  if (!pem.empty()) {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(
        BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), &BIO_free);
    std::unique_ptr<X509, decltype(&X509_free)> cert(
        bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr, &X509_free);
    if (cert) return IdentityFromCertificate(cert.get(), std::move(id.peer), "grpc");
  }
  // No PEM (not expected from gRPC 1.51): the CN alone, without O / OU.
  id.common_name = FirstProperty(context, "x509_common_name");
  id.authenticated = !id.common_name.empty();
  return id;
}

}  // namespace icr::broker
