// TLS for the broker's listeners: the PEM files a listener serves with, the
// checks that make a bad file a clear start-up error (not an obscure failure
// at the first handshake), the gRPC server credentials built from them, and
// whether a listen address is loopback (where plaintext is allowed in the
// development profile). docs/security-tls.md describes the profiles.
//
//   icr::broker::TlsOptions tls;
//   tls.certificate_file = "server.pem";
//   tls.private_key_file = "server.key";
//   tls.client_ca_file = "ca.pem";  // mutual TLS: clients need a certificate
//   std::shared_ptr<grpc::ServerCredentials> credentials;
//   auto s = icr::broker::BuildServerCredentials(tls, &credentials);
//
// Thread-safety: plain functions; safe from any thread.
#pragma once

#include <memory>
#include <string>

#include "store/status.h"

namespace grpc {
class ServerCredentials;
}

namespace icr::broker {

struct TlsOptions {
  // PEM certificate chain (leaf first) and its PEM private key. Both set:
  // TLS 1.2 or later; both empty: plaintext. Default: empty.
  std::string certificate_file;
  std::string private_key_file;
  // PEM CA bundle for client certificates. Set: clients are asked for a
  // certificate, verified against it (chain, validity dates), and their
  // identity (broker/identity.h) is taken from its subject. Default: empty
  // (no client certificates; every caller unauthenticated).
  std::string client_ca_file;
  // With client_ca_file: refuse the handshake of a client without a valid
  // certificate (true), or let it in unauthenticated (false). Default: true.
  bool require_client_certificate = true;

  bool enabled() const { return !certificate_file.empty(); }
  bool mutual() const { return enabled() && !client_ca_file.empty(); }
};

// The option names used in error messages, e.g. {"--mllp-tls-cert", ...}.
struct TlsOptionNames {
  std::string certificate = "--tls-cert";
  std::string private_key = "--tls-key";
  std::string client_ca = "--tls-client-ca";
};

// The PEM contents of a TlsOptions' files, checked.
struct TlsFiles {
  std::string certificate_chain;
  std::string private_key;
  std::string client_ca;  // empty when no client CA
};

// Reads and checks the files: each readable and PEM ("cannot read --tls-cert
// /path: No such file or directory"), the key the certificate's (checked
// with X509_check_private_key), the CA bundle has at least one certificate.
// Both certificate and key or neither; a client CA needs a certificate.
// kInvalidArgument naming the option and file otherwise. With no
// certificate, OK and `out` left empty (plaintext).
store::Status LoadTlsFiles(const TlsOptions& options, const TlsOptionNames& names, TlsFiles* out);

// gRPC server credentials for `options`: insecure when no certificate is
// set; else SSL (TLS 1.2 minimum, gRPC's default) and, with a client CA,
// client certificates requested and verified (required unless
// require_client_certificate is false). Errors as LoadTlsFiles, with the
// default --tls-* names.
store::Status BuildServerCredentials(const TlsOptions& options,
                                     std::shared_ptr<grpc::ServerCredentials>* out);

// True when a "host:port" listen address ("[v6]:port", gRPC's
// "ipv4:"/"ipv6:"/"unix:" forms too) can only be reached from this machine:
// 127.0.0.0/8, ::1, localhost, or a unix socket. "0.0.0.0", "[::]", an empty
// host, or any other name or address: false.
bool IsLoopbackListenAddress(const std::string& listen);

}  // namespace icr::broker
