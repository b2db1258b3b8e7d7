// MllpServer: HL7 v2 over MLLP (optionally inside TLS), in front of the
// broker's ingest path.
//
//   icr::adapters::hl7::MllpOptions options;
//   options.listen = "0.0.0.0:2575";
//   std::unique_ptr<icr::adapters::hl7::MllpServer> mllp;
//   auto s = icr::adapters::hl7::MllpServer::Start(options, broker->ingest(), &mllp);
//   ...
//   mllp->Stop();          // before the broker's Shutdown()
//
// Each frame (0x0B <message> 0x1C 0x0D) is parsed (er7.h), mapped
// (adt_mapping.h) and published through broker::Ingest in one atomic
// request; the ACK (ack.h) is written only when the outcome is known: AA
// after the events are durable (or already were: a resend of the same MSH-10
// from the same MSH-3), AE or AR otherwise. A connection handles one message
// at a time and reads the next frame only after the previous ACK is written,
// which keeps each sender's messages in order.
//
// Framing rules: CR, LF, space and tab between frames are skipped; any other
// byte outside a frame closes the connection (the peer is not speaking MLLP).
// A 0x0B inside a frame restarts the frame. A frame larger than
// max_message_bytes is answered with AR (ERR-3 102) and the connection is
// closed. A connection idle (no bytes, no ACK to write) for
// idle_timeout_seconds is closed.
//
// Thread-safety: Start, port and Stop may be called from any thread; Stop is
// idempotent and the destructor calls it. The Ingest must outlive Stop().
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "icr/v1/events.pb.h"
#include "store/status.h"

namespace icr::broker {
class Ingest;
}  // namespace icr::broker

namespace icr::adapters::hl7 {

struct MllpOptions {
  // host:port to listen on ("[::1]:2575" for IPv6; port 0 picks a free port,
  // see MllpServer::port). Default: 127.0.0.1:2575.
  std::string listen = "127.0.0.1:2575";
  // care_setting of the events this listener produces. Default: ACUTE.
  icr::v1::CareSetting care_setting = icr::v1::ACUTE;
  // Largest HL7 message (one frame's content). Default: 1 MiB.
  size_t max_message_bytes = 1 << 20;
  // A connection with nothing to read or write for this long is closed; also
  // the limit for writing one ACK. Default: 300 s.
  int idle_timeout_seconds = 300;
  // Most open connections; more are accepted and closed at once. Default: 256.
  int max_connections = 256;
  // Read HL7 times without an offset as Europe/London local time (true) or
  // as UTC (false). Default: true.
  bool assume_london_time = true;
  // TLS: both set = MLLP inside TLS 1.2+ with this PEM certificate chain and
  // key. Default: empty (plain TCP).
  std::string tls_certificate_file;
  std::string tls_private_key_file;
  // With TLS: PEM CA bundle; when set, clients must present a certificate
  // signed by it (mutual TLS). Default: empty (no client certificates).
  std::string tls_client_ca_file;
  // How long Stop() lets in-flight messages finish before closing their
  // connections. Default: 5,000 ms.
  int stop_grace_ms = 5000;
  // MSH-3 of ACKs when the message's MSH-5 is empty. Default: ICR-BROKER.
  std::string ack_application = "ICR-BROKER";
};

// Counters since Start; a snapshot.
struct MllpStats {
  uint64_t connections_accepted = 0;
  uint64_t messages = 0;  // frames received
  uint64_t acks_aa = 0;
  uint64_t acks_ae = 0;
  uint64_t acks_ar = 0;
  uint64_t duplicates = 0;  // AA for a message that was already stored
};

class MllpServer {
 public:
  // Binds, starts the listener thread and returns OK, or kInvalidArgument
  // (bad options, TLS files) / kUnavailable (address in use) with why.
  // REQUIRES: ingest outlives the server's Stop().
  static store::Status Start(const MllpOptions& options, broker::Ingest* ingest,
                             std::unique_ptr<MllpServer>* out);

  ~MllpServer();
  MllpServer(const MllpServer&) = delete;
  MllpServer& operator=(const MllpServer&) = delete;

  // The bound port.
  int port() const;
  // Stops accepting; lets messages already received finish (their ACKs are
  // written, for up to stop_grace_ms), closes every connection and joins the
  // listener thread.
  void Stop();
  MllpStats stats() const;

  class Impl;

 private:
  explicit MllpServer(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace icr::adapters::hl7
