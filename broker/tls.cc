#include "broker/tls.h"

#include <arpa/inet.h>
#include <grpcpp/security/server_credentials.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

namespace icr::broker {
namespace {

using store::Status;

Status ReadFile(const std::string& path, const std::string& name, std::string* out) {
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return Status::InvalidArgument("cannot read " + name + " " + path + ": " +
                                   (errno != 0 ? std::strerror(errno) : "cannot open"));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  if (out->empty()) return Status::InvalidArgument("cannot read " + name + " " + path + ": empty");
  return {};
}

// OpenSSL's most recent error, as text (and clears the queue).
std::string OpenSslError() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "not PEM";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

using Bio = std::unique_ptr<BIO, decltype(&BIO_free)>;
Bio MemBio(const std::string& s) {
  return Bio(BIO_new_mem_buf(s.data(), static_cast<int>(s.size())), &BIO_free);
}

}  // namespace

Status LoadTlsFiles(const TlsOptions& options, const TlsOptionNames& names, TlsFiles* out) {
  *out = TlsFiles();
  const bool has_cert = !options.certificate_file.empty();
  const bool has_key = !options.private_key_file.empty();
  if (has_cert != has_key) {
    return Status::InvalidArgument(has_cert ? names.certificate + " needs " + names.private_key
                                            : names.private_key + " needs " + names.certificate);
  }
  if (!has_cert) {
    if (!options.client_ca_file.empty()) {
      return Status::InvalidArgument(names.client_ca + " needs " + names.certificate + " and " +
                                     names.private_key + " (client certificates need TLS)");
    }
    return {};
  }
  TlsFiles files;
  Status s = ReadFile(options.certificate_file, names.certificate, &files.certificate_chain);
  if (s.ok()) s = ReadFile(options.private_key_file, names.private_key, &files.private_key);
  if (s.ok() && !options.client_ca_file.empty()) {
    s = ReadFile(options.client_ca_file, names.client_ca, &files.client_ca);
  }
  if (!s.ok()) return s;

  ERR_clear_error();
  Bio cert_bio = MemBio(files.certificate_chain);
  std::unique_ptr<X509, decltype(&X509_free)> cert(
      PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr), &X509_free);
  if (!cert) {
    return Status::InvalidArgument(names.certificate + " " + options.certificate_file +
                                   ": no PEM certificate (" + OpenSslError() + ")");
  }
  Bio key_bio = MemBio(files.private_key);
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr), &EVP_PKEY_free);
  if (!key) {
    return Status::InvalidArgument(names.private_key + " " + options.private_key_file +
                                   ": no unencrypted PEM private key (" + OpenSslError() + ")");
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    return Status::InvalidArgument(names.private_key + " " + options.private_key_file +
                                   " does not match the certificate in " + names.certificate +
                                   " " + options.certificate_file);
  }
  if (!files.client_ca.empty()) {
    Bio ca_bio = MemBio(files.client_ca);
    std::unique_ptr<X509, decltype(&X509_free)> ca(
        PEM_read_bio_X509(ca_bio.get(), nullptr, nullptr, nullptr), &X509_free);
    if (!ca) {
      return Status::InvalidArgument(names.client_ca + " " + options.client_ca_file +
                                     ": no PEM certificate (" + OpenSslError() + ")");
    }
  }
  ERR_clear_error();
  *out = std::move(files);
  return {};
}

Status BuildServerCredentials(const TlsOptions& options,
                              std::shared_ptr<grpc::ServerCredentials>* out) {
  TlsFiles files;
  Status s = LoadTlsFiles(options, TlsOptionNames(), &files);
  if (!s.ok()) return s;
  if (!options.enabled()) {
    *out = grpc::InsecureServerCredentials();
    return {};
  }
  grpc_ssl_client_certificate_request_type request = GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
  if (options.mutual()) {
    request = options.require_client_certificate
                  ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                  : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  // gRPC's SSL server credentials negotiate TLS 1.2 or 1.3 only.
  grpc::SslServerCredentialsOptions ssl(request);
  ssl.pem_root_certs = files.client_ca;
  ssl.pem_key_cert_pairs.push_back({files.private_key, files.certificate_chain});
  *out = grpc::SslServerCredentials(ssl);
  if (!*out) return Status::InvalidArgument("gRPC refused the TLS credentials");
  return {};
}

bool IsLoopbackListenAddress(const std::string& listen) {
  std::string rest = listen;
  if (rest.rfind("unix:", 0) == 0 || rest.rfind("unix-abstract:", 0) == 0) return true;
  for (const char* scheme : {"ipv4:", "ipv6:", "dns:///", "dns:"}) {
    if (rest.rfind(scheme, 0) == 0) {
      rest = rest.substr(std::strlen(scheme));
      break;
    }
  }
  std::string host;
  if (!rest.empty() && rest[0] == '[') {
    const size_t close = rest.find(']');
    if (close == std::string::npos) return false;
    host = rest.substr(1, close - 1);
  } else {
    const size_t colon = rest.rfind(':');
    host = colon == std::string::npos ? rest : rest.substr(0, colon);
  }
  if (host.empty()) return false;
  std::string lower;
  for (char c : host) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower == "localhost" || lower == "localhost.") return true;
  in_addr v4{};
  if (inet_pton(AF_INET, lower.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, lower.c_str(), &v6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
    // ::ffff:127.x.x.x
    return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
  }
  return false;
}

}  // namespace icr::broker
