#include "broker/service.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>
#include <grpcpp/support/proto_buffer_reader.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <deque>
#include <map>
#include <set>
#include <mutex>
#include <optional>

#include "broker/access.h"
#include "broker/delivery.h"
#include "broker/governance/minimise.h"
#include "broker/governance/scope.h"
#include "broker/grpc_status.h"
#include "broker/ingest.h"
#include "broker/nhs_number.h"
#include "broker/timestamp.h"
#include "broker/utf8.h"
#include "broker/workflow_reader.h"

namespace icr::broker {
namespace {

using icr::v1::CareEvent;

// The identity a gRPC call arrived with (its client certificate, if any).
PeerIdentity CallerIdentity(const grpc::ServerContextBase& ctx) {
  PeerIdentity identity;
  if (auto auth = ctx.auth_context()) identity = IdentityFromAuthContext(*auth, ctx.peer());
  identity.peer = ctx.peer();
  identity.channel = "grpc";
  return identity;
}

constexpr size_t kMaxStreamPendingEvents = 20000;
// A Subscribe batch stops at about this many event bytes (a client's default
// receive limit is 4 MiB).
constexpr size_t kMaxBatchBytes = 1 << 20;
// Answers waiting to be written before a stream stops reading.
constexpr size_t kMaxStreamUnwrittenResponses = 1024;


// ---------------------------------------------------------------------------
// Raw requests
// ---------------------------------------------------------------------------
//
// Publish, PublishBatch, PublishStream and Subscribe are registered raw
// (grpc::ByteBuffer) and parse their requests here. Parsed by gRPC, a
// request that is not valid protobuf, in particular one with a string field
// that is not UTF-8 (proto3 checks that on parse), would be answered
// UNIMPLEMENTED with an empty message (unary calls) or end a stream's reads
// as if the client had half-closed. Parsed here, it is answered
// INVALID_ARGUMENT naming the field. Parsing and explaining both read the
// received slices in place (nothing is copied but the strings examined).

// A protobuf reader over a request's received slices, nothing copied. (The
// ProtoBufferReader only reads the buffer.)
struct RawRequestReader {
  explicit RawRequestReader(const grpc::ByteBuffer& raw)
      : slices(const_cast<grpc::ByteBuffer*>(&raw)), in(&slices) {}
  grpc::ProtoBufferReader slices;
  google::protobuf::io::CodedInputStream in;  // declared after `slices`: it reads it
};

// Reads the message at `in` (a `type` at `path`) and finds the first string
// field, at any depth, that is not UTF-8: true with `*problem` set to
// "<path>: is not valid UTF-8 (...)". False when there is none, or when the
// bytes stop being readable first.
bool FindInvalidUtf8(const google::protobuf::Descriptor* type,
                     google::protobuf::io::CodedInputStream* in, const std::string& path, int depth,
                     std::string* problem) {
  using google::protobuf::FieldDescriptor;
  using Wire = google::protobuf::internal::WireFormatLite;
  std::map<int, int> elements;  // per repeated field, the elements read so far
  while (true) {
    const uint32_t tag = in->ReadTag();
    if (tag == 0) return false;  // the end, or an unreadable tag
    const FieldDescriptor* field = type->FindFieldByNumber(Wire::GetTagFieldNumber(tag));
    if (field == nullptr || Wire::GetTagWireType(tag) != Wire::WIRETYPE_LENGTH_DELIMITED ||
        (field->type() != FieldDescriptor::TYPE_STRING &&
         field->type() != FieldDescriptor::TYPE_MESSAGE)) {
      if (!Wire::SkipField(in, tag)) return false;
      continue;
    }
    std::string name = path.empty() ? field->name() : path + "." + field->name();
    if (field->is_repeated()) name += "[" + std::to_string(elements[field->number()]++) + "]";
    uint32_t length = 0;
    if (!in->ReadVarint32(&length) || length > static_cast<uint32_t>(INT_MAX)) return false;
    if (field->type() == FieldDescriptor::TYPE_STRING) {
      std::string value;
      if (!in->ReadString(&value, static_cast<int>(length))) return false;
      const std::string utf8 = Utf8Problem(value);
      if (utf8.empty()) continue;
      *problem = name + ": " + utf8;
      return true;
    }
    if (depth >= 100) return false;  // protobuf's own nesting limit
    const auto limit = in->PushLimit(static_cast<int>(length));
    if (FindInvalidUtf8(field->message_type(), in, name, depth + 1, problem)) return true;
    if (!in->ConsumedEntireMessage()) return false;
    in->PopLimit(limit);
  }
}

// Why `raw` does not parse as a `type`: "<path>: <problem>".
std::string ParseProblem(const google::protobuf::Descriptor* type, const grpc::ByteBuffer& raw) {
  RawRequestReader reader(raw);
  std::string problem;
  if (FindInvalidUtf8(type, &reader.in, "", 0, &problem)) return problem;
  return "request: not a valid " + type->full_name() + " (its protobuf encoding cannot be parsed)";
}

// Parses a raw request into `out`; false with `*problem` set when it does not
// parse.
bool ParseRequest(const grpc::ByteBuffer& raw, google::protobuf::Message* out,
                  std::string* problem) {
  {
    // The reader only reads the buffer.
    grpc::ProtoBufferReader reader(const_cast<grpc::ByteBuffer*>(&raw));
    if (reader.status().ok() && out->ParseFromZeroCopyStream(&reader)) return true;
  }
  *problem = ParseProblem(out->GetDescriptor(), raw);
  return false;
}

// Releases a unary call's request bytes once parsed: gRPC keeps the request
// until the call finishes (after the store's fsync), and typed handlers free
// it after parsing. The buffer is the handler's own; gRPC only destroys it.
void ReleaseRequest(const grpc::ByteBuffer* raw) { const_cast<grpc::ByteBuffer*>(raw)->Clear(); }

// The varint field `number` at the top level of a serialized message, or 0
// (the request_id of a PublishStreamRequest that does not parse).
uint64_t TopLevelVarint(const grpc::ByteBuffer& raw, int number) {
  using Wire = google::protobuf::internal::WireFormatLite;
  RawRequestReader reader(raw);
  google::protobuf::io::CodedInputStream& in = reader.in;
  uint64_t value = 0;
  while (const uint32_t tag = in.ReadTag()) {
    if (Wire::GetTagFieldNumber(tag) == number &&
        Wire::GetTagWireType(tag) == Wire::WIRETYPE_VARINT) {
      if (!in.ReadVarint64(&value)) break;
    } else if (!Wire::SkipField(&in, tag)) {
      break;
    }
  }
  return value;
}

// A raw method's response.
grpc::Status SerializeResponse(const google::protobuf::Message& response, grpc::ByteBuffer* out) {
  bool own = false;
  return grpc::SerializationTraits<google::protobuf::Message>::Serialize(response, out, &own);
}

void FillResult(const store::AppendResult& r, icr::v1::PublishResponse* out) {
  out->set_position(r.position);
  out->set_event_id(r.event_id);
  out->set_duplicate(r.duplicate);
  SetTimestamp(out->mutable_recorded_at(), r.recorded_at_micros);
}


// The events of several NHS numbers (one person after merges) with position
// > `after`, in position order: up to `max` from each, cut at the lowest
// last position of any full read so nothing in between is skipped.
store::Status ReadPeople(store::EventStore* store, const std::vector<std::string>& numbers,
                         uint64_t after, size_t max, std::vector<store::EventPtr>* out,
                         bool* exhausted) {
  *exhausted = true;
  uint64_t bound = UINT64_MAX;
  for (const std::string& nhs : numbers) {
    std::vector<store::EventPtr> part;
    store::Status s = store->ReadPatient(nhs, after, max, &part);
    if (!s.ok()) return s;
    if (part.size() == max) {
      *exhausted = false;
      bound = std::min(bound, part.back()->position);
    }
    out->insert(out->end(), part.begin(), part.end());
  }
  std::sort(out->begin(), out->end(), [](const store::EventPtr& a, const store::EventPtr& b) {
    return a->position < b->position;
  });
  while (!out->empty() && out->back()->position > bound) out->pop_back();
  return store::Status::Ok();
}

// ---------------------------------------------------------------------------
// PublishStream
// ---------------------------------------------------------------------------

// Reads requests, validates, hands them to the store and writes one response
// per request in request order. Stops reading while too many events wait for
// the store or too many answers wait to be written (a client that sends but
// never reads), so a publisher cannot fill memory.
//
// Lifetime: the store answers on its writer thread, which holds no gRPC
// reference to the call. The stream's state therefore lives in a shared
// State that store callbacks keep alive; OnDone detaches the reactor from it
// under its mutex, so a late callback finds no reactor and does nothing.
//
// Raw (grpc::ByteBuffer both ways): a request that does not parse is answered
// in its place in the order (INVALID_ARGUMENT naming the field, with the
// request_id if it can be read) and the stream goes on.
class PublishStreamReactor final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  PublishStreamReactor(const ServiceConfig& config, grpc::CallbackServerContext* ctx)
      : config_(config),
        state_(std::make_shared<State>()),
        origin_(NextOrigin()),
        identity_(CallerIdentity(*ctx)) {
    // Who the stream is from is settled once, and counts against the
    // principal's connections while the stream is open.
    if (config_.access != nullptr) {
      store::Status s = config_.access->Identify(identity_, &caller_);
      if (s.ok()) {
        s = config_.access->EnterConnection(caller_);
        entered_ = s.ok();
      }
      if (!s.ok()) {
        state_->finished = true;
        Finish(ToGrpc(s));
        return;
      }
    }
    state_->reactor = this;
    state_->reading = true;
    StartRead(&raw_request_);
  }

  void OnReadDone(bool ok) override {
    std::lock_guard<std::recursive_mutex> lock(state_->mu);
    State& st = *state_;
    st.reading = false;
    if (!ok) {
      st.reads_done = true;
      MaybeFinishLocked(st);
      return;
    }
    auto slot = std::make_shared<Slot>();
    st.slots.push_back(slot);
    std::string problem;
    if (!ParseRequest(raw_request_, &request_, &problem)) {
      slot->response.set_request_id(TopLevelVarint(raw_request_, 1));
      slot->response.set_code(grpc::StatusCode::INVALID_ARGUMENT);
      slot->response.set_message(problem);
      slot->ready = true;
      raw_request_.Clear();
      PumpLocked(st);
      MaybeReadLocked(st);
      return;
    }
    raw_request_.Clear();
    slot->response.set_request_id(request_.request_id());
    // The reactor owns request_: move the events out rather than copy them.
    std::vector<CareEvent> events;
    events.reserve(request_.events_size());
    for (auto& e : *request_.mutable_events()) events.push_back(std::move(e));
    const size_t n = events.size();
    st.pending_events += n;
    ++st.pending_calls;
    std::shared_ptr<State> shared = state_;
    // One origin per stream: its requests keep their order per person even
    // when an urgent one could overtake queued routine ones.
    config_.ingest->Publish(
        std::move(events), /*batch=*/true,
        [shared, slot, n](const store::Status& s, std::vector<store::AppendResult> results) {
          std::lock_guard<std::recursive_mutex> lock(shared->mu);
          State& st = *shared;
          if (!s.ok()) {
            grpc::Status g = ToGrpc(s);
            slot->response.set_code(g.error_code());
            slot->response.set_message(g.error_message());
          } else {
            for (const auto& r : results) FillResult(r, slot->response.add_results());
          }
          slot->ready = true;
          st.pending_events -= n;
          --st.pending_calls;
          if (st.reactor == nullptr) return;  // the call is over
          st.reactor->PumpLocked(st);
          if (st.reactor != nullptr) st.reactor->MaybeReadLocked(st);
          if (st.reactor != nullptr) st.reactor->MaybeFinishLocked(st);
        },
        origin_, &identity_);
    if (st.reactor == nullptr) return;
    PumpLocked(st);
    MaybeReadLocked(st);
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::recursive_mutex> lock(state_->mu);
    State& st = *state_;
    st.writing = false;
    if (!ok) {
      // The client is gone: answers cannot be written, and with no read
      // outstanding no read will fail to tell us so.
      st.broken = true;
      st.slots.clear();
      if (!st.reading) st.reads_done = true;
    } else {
      st.slots.pop_front();
    }
    PumpLocked(st);
    MaybeReadLocked(st);
    MaybeFinishLocked(st);
  }

  void OnCancel() override {
    std::lock_guard<std::recursive_mutex> lock(state_->mu);
    State& st = *state_;
    st.broken = true;
    st.slots.clear();
    if (!st.reading) st.reads_done = true;
    MaybeFinishLocked(st);
  }

  void OnDone() override {
    {
      std::lock_guard<std::recursive_mutex> lock(state_->mu);
      state_->reactor = nullptr;
    }
    if (entered_) config_.access->LeaveConnection(caller_);
    delete this;
  }

 private:
  struct Slot {
    icr::v1::PublishStreamResponse response;
    grpc::ByteBuffer buffer;  // the response serialized, while it is written
    bool ready = false;
  };
  struct State {
    std::recursive_mutex mu;
    PublishStreamReactor* reactor = nullptr;  // null once OnDone ran
    std::deque<std::shared_ptr<Slot>> slots;
    size_t pending_events = 0;
    size_t pending_calls = 0;
    bool reads_done = false;
    bool reading = false;
    bool writing = false;
    bool broken = false;
    bool finished = false;
    bool pumping = false;
    bool repump = false;
  };

  // One write at a time, in request order. A write completing inline
  // re-enters through OnWriteDone; that only flags another round here.
  void PumpLocked(State& st) {
    if (st.pumping) {
      st.repump = true;
      return;
    }
    st.pumping = true;
    do {
      st.repump = false;
      if (st.finished || st.writing || st.broken || st.slots.empty() || !st.slots.front()->ready) {
        break;
      }
      Slot& slot = *st.slots.front();
      if (!SerializeResponse(slot.response, &slot.buffer).ok()) {
        // Cannot happen for a well-formed response; answer rather than stall
        // (with the request_id, so the client can match it).
        const uint64_t request_id = slot.response.request_id();
        slot.response.Clear();
        slot.response.set_request_id(request_id);
        slot.response.set_code(grpc::StatusCode::INTERNAL);
        slot.response.set_message("the response could not be serialized");
        SerializeResponse(slot.response, &slot.buffer);
      }
      st.writing = true;
      StartWrite(&slot.buffer);
    } while (st.repump);
    st.pumping = false;
  }

  void MaybeReadLocked(State& st) {
    if (st.reads_done || st.reading || st.broken || st.finished ||
        st.pending_events >= kMaxStreamPendingEvents ||
        st.slots.size() >= kMaxStreamUnwrittenResponses) {
      return;
    }
    st.reading = true;
    StartRead(&raw_request_);
  }

  // Finishes once reads are over, the store has answered everything and
  // every answer is written (or can no longer be). After Finish the reactor
  // may be deleted at any moment on another thread: nothing touches it.
  void MaybeFinishLocked(State& st) {
    if (st.finished || !st.reads_done || st.pending_calls > 0 || st.writing) return;
    if (!st.broken && !st.slots.empty()) return;
    st.finished = true;
    Finish(grpc::Status::OK);
  }

  static uint64_t NextOrigin() {
    static std::atomic<uint64_t> next{1};
    return next.fetch_add(1, std::memory_order_relaxed);
  }

  const ServiceConfig& config_;
  std::shared_ptr<State> state_;
  const uint64_t origin_;         // this stream's calls keep their order (store::AppendOrdered)
  const PeerIdentity identity_;   // who the stream is from
  Caller caller_;
  bool entered_ = false;          // counted in the principal's connections
  grpc::ByteBuffer raw_request_;  // the read in progress
  icr::v1::PublishStreamRequest request_;  // raw_request_, parsed
};

// ---------------------------------------------------------------------------
// Subscribe
// ---------------------------------------------------------------------------

class SubscribeReactor;

using SubscribeWriter = grpc::ServerWriteReactor<grpc::ByteBuffer>;

// Appends `value` as a protobuf varint.
void PutVarint(std::string* out, uint64_t value) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

// The bytes of one event for the wire: its stored bytes shared by reference
// count, or (not from the store, which cannot happen there) serialised now.
grpc::Slice EventSlice(const store::EventPtr& event) {
  if (event->encoded.empty()) return grpc::Slice(event->event.SerializeAsString());
  auto* keep = new store::EventPtr(event);
  return grpc::Slice(const_cast<char*>(event->encoded.data()), event->encoded.size(),
                     [](void* p) { delete static_cast<store::EventPtr*>(p); }, keep);
}

// A SubscribeResponse carrying `event`, built around the event's stored
// bytes without copying or re-serialising them: every subscriber is sent the
// same bytes. Wire format: delivery_attempt (field 3, varint), then event
// (field 1, length-delimited), as protobuf allows fields in any order.
grpc::ByteBuffer EventResponse(const store::EventPtr& event, uint32_t attempt) {
  grpc::Slice body = EventSlice(event);
  std::string head;
  head.push_back(static_cast<char>(3 << 3 | 0));
  PutVarint(&head, attempt);
  head.push_back(static_cast<char>(1 << 3 | 2));
  PutVarint(&head, body.size());
  grpc::Slice slices[2] = {grpc::Slice(head), std::move(body)};
  return grpc::ByteBuffer(slices, 2);
}

size_t VarintSize(uint64_t value) {
  size_t n = 1;
  while (value >= 0x80) {
    value >>= 7;
    ++n;
  }
  return n;
}

// A SubscribeResponse carrying `batch` (field 5, an EventBatch), built like
// EventResponse around the events' stored bytes. Each BatchedEvent is
// event (field 1, length-delimited) then delivery_attempt (field 2).
grpc::ByteBuffer BatchResponse(const std::vector<Delivery>& batch) {
  std::vector<grpc::Slice> events;
  events.reserve(batch.size());
  size_t body = 0;
  std::vector<size_t> item_sizes;
  item_sizes.reserve(batch.size());
  for (const Delivery& d : batch) {
    events.push_back(EventSlice(d.event));
    const size_t n = events.back().size();
    const size_t item = 1 + VarintSize(n) + n + 1 + VarintSize(d.attempt);
    item_sizes.push_back(item);
    body += 1 + VarintSize(item) + item;
  }
  std::vector<grpc::Slice> slices;
  slices.reserve(2 * batch.size() + 1);
  std::string glue;  // the bytes between one event's bytes and the next's
  glue.push_back(static_cast<char>(5 << 3 | 2));
  PutVarint(&glue, body);
  for (size_t i = 0; i < batch.size(); ++i) {
    glue.push_back(static_cast<char>(1 << 3 | 2));  // EventBatch.events
    PutVarint(&glue, item_sizes[i]);
    glue.push_back(static_cast<char>(1 << 3 | 2));  // BatchedEvent.event
    PutVarint(&glue, events[i].size());
    slices.emplace_back(glue);
    slices.push_back(std::move(events[i]));
    glue.clear();
    glue.push_back(static_cast<char>(2 << 3 | 0));  // BatchedEvent.delivery_attempt
    PutVarint(&glue, batch[i].attempt);
  }
  slices.emplace_back(glue);
  return grpc::ByteBuffer(slices.data(), slices.size());
}

grpc::ByteBuffer MessageBuffer(const google::protobuf::Message& message) {
  grpc::Slice slice(message.SerializeAsString());
  return grpc::ByteBuffer(&slice, 1);
}

// Who a subscription's events are disclosed to, and why. Every delivery is
// minimised to the principal's profile and audited before it is written.
struct Disclosure {
  AccessControl* access = nullptr;  // null: no policy (a service without one)
  Caller caller;                    // as identified when the stream connected
  icr::v1::Purpose purpose = icr::v1::DIRECT_CARE;
  std::string legal_basis;
  std::string subscription;         // the durable name; "" for an ephemeral one

  const std::string& principal_id() const { return caller.principal->id; }
};

std::string Upper(std::string text) {
  for (char& c : text) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return text;
}

// The development profile's principal (plaintext on loopback) acts for anyone.
bool IsDevelopmentPrincipal(const Caller& caller) { return !caller.identity.authenticated; }

// Audit records for `events` disclosed to `who` by `action`: one record per
// person, naming each event. Written before anything is sent.
store::Status AuditDisclosure(AccessControl* access, const Caller& who,
                              icr::v1::AuditAction action, icr::v1::Purpose purpose,
                              const std::string& legal_basis, const std::string& detail,
                              const std::vector<const CareEvent*>& events) {
  if (access == nullptr || events.empty()) return {};
  std::vector<icr::v1::AuditRecord> records;
  std::map<std::string, size_t> by_person;
  for (const CareEvent* e : events) {
    auto [it, added] = by_person.emplace(e->nhs_number(), records.size());
    if (added) {
      records.push_back(access->Record(who, action));
      auto& r = records.back();
      r.set_nhs_number(e->nhs_number());
      r.set_purpose(purpose);
      r.set_legal_basis(legal_basis);
      r.set_detail(detail);
    }
    auto& r = records[it->second];
    r.add_event_ids(e->event_id());
    r.add_positions(e->position());
  }
  return access->Audit(std::move(records));
}

// The state of one subscription's streams, shared between their reactors and
// the hub: one stream, or the members of a consumer group sharing one engine.
// A reactor may go away (OnDone) while the hub still holds the session, so
// every call checks that the member is still attached.
class SubscribeSession final : public Session,
                               public std::enable_shared_from_this<SubscribeSession> {
 public:
  SubscribeSession(const ServiceConfig& config, std::unique_ptr<SubscriptionEngine> engine,
                   uint32_t heartbeat_ms, bool summary_changes, bool group,
                   std::string filter_bytes, Disclosure disclosure)
      : config_(config),
        engine_(std::move(engine)),
        heartbeat_ms_(heartbeat_ms),
        summary_changes_(summary_changes),
        group_(group),
        filter_bytes_(std::move(filter_bytes)),
        disclosure_(std::move(disclosure)) {
    if (disclosure_.access != nullptr) {
      scope_ = disclosure_.access->SubscribeScope(disclosure_.principal_id(), disclosure_.purpose);
    }
  }

  bool group() const { return group_; }
  // The principal the session discloses to ("" without a policy).
  std::string principal() const {
    return disclosure_.access ? disclosure_.principal_id() : std::string();
  }
  // False once every stream has ended (cancelled, cut off, failed), even if
  // their reactors have not finished closing yet.
  bool Live() {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    for (const auto& [id, m] : members_) {
      if (!m.finished && !m.left) return true;
    }
    return false;
  }
  const std::string& filter_bytes() const { return filter_bytes_; }

  // Adds a stream. False if the session is over (its last stream left) or
  // already has its one stream (not a group).
  bool Join(SubscribeWriter* reactor, grpc::CallbackServerContext* ctx, uint32_t max_batch,
            uint64_t* id) {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    if (closed_ || (!group_ && !members_.empty())) return false;
    *id = next_member_++;
    Member& m = members_[*id];
    m.reactor = reactor;
    m.ctx = ctx;
    m.max_batch = max_batch;
    m.last_write = NowMicros();
    if (*id == 1) {
      // Woken by the hub when events are queued to it at the tail.
      engine_->SetWaker([weak = weak_from_this()] {
        if (auto self = weak.lock()) self->Wake();
      });
    }
    SetMembersLocked();
    Pump();
    return true;
  }

  // Called from a reactor's OnDone: no more calls into it. True when it was
  // the last stream (the session is over; the caller releases it).
  bool Leave(uint64_t id) {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    if (Member* m = Find(id)) {
      m->finished = true;
      m->left = true;
      m->reactor = nullptr;
      m->ctx = nullptr;
    }
    Compact();
    if (engine_->durable()) engine_->Persist(true);
    for (const auto& [other, m] : members_) {
      if (!m.left) {
        SetMembersLocked();  // its people, and what it had in flight, go to the others
        Pump();
        return false;
      }
    }
    closed_ = true;
    return true;
  }

  void OnWriteDone(uint64_t id, bool ok) {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    Member* m = Find(id);
    if (!m) return;
    m->writing = false;
    if (!ok) {
      FinishLocked(m, {grpc::StatusCode::CANCELLED, "the subscriber stopped reading"});
      return;
    }
    if (m->pending_finish) {
      FinishLocked(m, *m->pending_finish);
      return;
    }
    Pump();
  }

  void OnCancel(uint64_t id) {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    if (Member* m = Find(id)) FinishLocked(m, {grpc::StatusCode::CANCELLED, "cancelled by the subscriber"});
  }

  bool follows() const override { return true; }

  void Wake() override {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    Pump();
  }

  void Tick(int64_t now) override {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    if (members_.empty()) return;
    Busy busy(this);
    for (auto& [id, m] : members_) {
      if (m.finished || !m.writing || m.cut_off || config_.write_timeout_ms == 0) continue;
      if (now - m.last_write >= static_cast<int64_t>(config_.write_timeout_ms) * 1000) {
        // The subscriber stopped reading: a write has waited for flow control
        // longer than the write timeout. Cut the stream off (the cursor keeps
        // what was acknowledged; it resumes from there on reconnect), so it
        // holds nothing of the broker's.
        m.cut_off = true;
        config_.subscribers_cut_off->fetch_add(1, std::memory_order_relaxed);
        if (m.ctx) m.ctx->TryCancel();
      }
    }
    store::Status s = engine_->Tick(now);
    (void)s;  // a failed park is retried at the next tick
    Pump();
    for (auto& [id, m] : members_) {
      if (!m.writing && !m.finished && heartbeat_ms_ > 0 &&
          now - m.last_write >= static_cast<int64_t>(heartbeat_ms_) * 1000) {
        icr::v1::SubscribeResponse response;
        SetTimestamp(response.mutable_heartbeat()->mutable_at(), now);
        response.mutable_heartbeat()->set_last_position(config_.store->LastPosition());
        m.buffer = MessageBuffer(response);
        StartWriteLocked(&m, now);
      }
    }
  }

  void Shutdown() override {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    Busy busy(this);
    for (auto& [id, m] : members_) {
      FinishLocked(&m, {grpc::StatusCode::UNAVAILABLE,
                        "the broker is shutting down; reconnect to resume from your cursor"});
    }
  }

  AckOutcome Ack(const std::vector<uint64_t>& positions) override {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    AckOutcome outcome = engine_->Ack(positions);
    Pump();
    return outcome;
  }

  store::Status Replay(const std::vector<uint64_t>& positions, uint32_t* count) override {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    store::Status s = engine_->ReplayParked(positions, count);
    Pump();
    return s;
  }

  uint32_t InFlight() override {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    return static_cast<uint32_t>(engine_->in_flight());
  }

 private:
  struct Member {
    SubscribeWriter* reactor = nullptr;
    grpc::CallbackServerContext* ctx = nullptr;
    grpc::ByteBuffer buffer;  // the write in progress
    uint32_t max_batch = 1;   // events per message (SubscribeRequest.max_batch)
    // Taken from the engine but past the size limit of the last batch: sent
    // first in the next one. Dropped if the stream ends: it is in flight,
    // unacknowledged, and a durable subscription sends it again.
    std::optional<Delivery> held;
    int64_t last_write = 0;   // when the last write started
    bool writing = false;
    bool finished = false;
    bool cut_off = false;
    bool left = false;  // its reactor is done; erased when no loop runs
    std::optional<grpc::Status> pending_finish;
  };

  // Members are erased only outside loops over them (a Finish may complete
  // and come back through Leave on this thread).
  struct Busy {
    explicit Busy(SubscribeSession* s) : s(s) { ++s->busy_; }
    ~Busy() {
      if (--s->busy_ == 0) s->Compact();
    }
    SubscribeSession* s;
  };
  void Compact() {
    if (busy_ > 0) return;
    for (auto it = members_.begin(); it != members_.end();) {
      it = it->second.left ? members_.erase(it) : std::next(it);
    }
  }

  Member* Find(uint64_t id) {
    auto it = members_.find(id);
    return it == members_.end() ? nullptr : &it->second;
  }

  void SetMembersLocked() {
    std::vector<uint64_t> ids;
    for (const auto& [id, m] : members_) {
      if (!m.finished && !m.left) ids.push_back(id);
    }
    engine_->SetMembers(std::move(ids));
  }

  // Sends what is ready, one write at a time per stream. Re-entrant: a write
  // that completes inline re-enters through OnWriteDone, which only flags
  // another round here instead of recursing.
  void Pump() {
    if (pumping_) {
      repump_ = true;
      return;
    }
    pumping_ = true;
    Busy busy(this);
    do {
      repump_ = false;
      for (auto& [id, m] : members_) {
        if (m.finished || m.writing) continue;
        if (!PumpMember(id, &m)) break;
      }
    } while (repump_);
    pumping_ = false;
  }

  // Starts the member's next write, if there is one; false on an error that
  // finished the streams.
  bool PumpMember(uint64_t id, Member* m) {
    int64_t now = NowMicros();
    std::optional<Delivery> next;
    store::Status s;
    if (m->held) {
      next = std::move(m->held);
      m->held.reset();
    } else {
      s = NextInScope(now, id, &next);
    }
    if (!s.ok()) {
      FailAllLocked(s);
      return false;
    }
    if (!next) return true;
    // The policy in force now decides what the principal sees of the events.
    std::shared_ptr<const governance::Policy> keep;
    const governance::Principal* principal = nullptr;
    if (disclosure_.access != nullptr) {
      principal = disclosure_.access->Current(disclosure_.principal_id(), &keep);
      if (principal == nullptr) {
        FailAllLocked(store::Status::PermissionDenied(
            "principal '" + disclosure_.principal_id() +
            "' is no longer in the policy in force; nothing more is delivered"));
        return false;
      }
    }
    const CareEvent& event = next->event->event;
    std::vector<const CareEvent*> disclosed;
    if (m->max_batch > 1) {
      // Whatever else is ready goes in the same message.
      std::vector<Delivery> batch{std::move(*next)};
      size_t bytes = batch.front().event->encoded.size();
      while (batch.size() < m->max_batch) {
        std::optional<Delivery> more;
        s = NextInScope(now, id, &more);
        if (!s.ok()) {
          FailAllLocked(s);
          return false;
        }
        if (!more) break;
        const size_t n = more->event->encoded.size();
        if (bytes + n > kMaxBatchBytes) {
          m->held = std::move(more);
          break;
        }
        bytes += n;
        batch.push_back(std::move(*more));
      }
      for (const Delivery& d : batch) disclosed.push_back(&d.event->event);
      if (!AuditLocked(disclosed, false, principal, keep)) return false;
      for (Delivery& d : batch) d.event = MinimisedFor(principal, d.event);
      m->buffer = BatchResponse(batch);
    } else if (summary_changes_) {
      icr::v1::SubscribeResponse response;
      auto* changed = response.mutable_summary_changed();
      changed->set_position(event.position());
      changed->set_nhs_number(event.nhs_number());
      changed->set_cause(event.event_type());
      s = ReadCareSummary(config_.store, event.nhs_number(), changed->mutable_summary());
      if (!s.ok()) {
        FailAllLocked(s);
        return false;
      }
      if (principal != nullptr && principal->profile != nullptr) {
        governance::MinimiseSummary(*principal->profile, changed->mutable_summary());
      }
      disclosed.push_back(&event);
      if (!AuditLocked(disclosed, true, principal, keep)) return false;
      response.set_delivery_attempt(next->attempt);
      m->buffer = MessageBuffer(response);
    } else {
      disclosed.push_back(&event);
      if (!AuditLocked(disclosed, false, principal, keep)) return false;
      m->buffer = EventResponse(MinimisedFor(principal, next->event), next->attempt);
    }
    StartWriteLocked(m, now);
    return true;
  }

  // The engine's next delivery still in the principal's scope now. Events
  // were matched against the scope when first read; a redelivery or a replay
  // comes later, after a policy reload or an objection may have narrowed it.
  // One no longer in scope is acknowledged unsent (durable) or dropped.
  store::Status NextInScope(int64_t now, uint64_t id, std::optional<Delivery>* out) {
    for (;;) {
      store::Status s = engine_->Next(now, out, id);
      if (!s.ok() || !*out || !scope_ || (*scope_)((*out)->event->event)) return s;
      if (engine_->durable()) engine_->Ack({(*out)->event->position});
      out->reset();
    }
  }

  // Audits the disclosure of `events`; false (every stream ended, nothing
  // sent) if the audit trail cannot be written. What was taken from the
  // engine stays in flight, so a durable subscription gets it again.
  // The record names the principal as the policy in force has it now
  // (`current`, owned by `keep`), as the delivery was minimised for it.
  bool AuditLocked(const std::vector<const CareEvent*>& events, bool summary,
                   const governance::Principal* current,
                   const std::shared_ptr<const governance::Policy>& keep) {
    Caller who = disclosure_.caller;
    if (current != nullptr) {
      who.principal = current;
      who.policy = keep;
    }
    store::Status s = AuditDisclosure(
        disclosure_.access, who, icr::v1::DELIVERED, disclosure_.purpose,
        disclosure_.legal_basis,
        (disclosure_.subscription.empty() ? std::string("ephemeral subscription")
                                          : "subscription " + disclosure_.subscription) +
            (summary ? " (summary_changes)" : ""),
        events);
    if (s.ok()) return true;
    FailAllLocked(s);
    return false;
  }

  // A store error ends every stream of the session.
  void FailAllLocked(const store::Status& s) {
    for (auto& [id, m] : members_) FinishLocked(&m, ToGrpc(s));
  }

  void StartWriteLocked(Member* m, int64_t now) {
    m->writing = true;
    m->last_write = now;
    repump_ = true;  // others may have something to send too
    m->reactor->StartWrite(&m->buffer);
  }

  void FinishLocked(Member* m, const grpc::Status& status) {
    if (m->finished || !m->reactor) return;
    if (m->writing) {
      // Finish after the outstanding write completes (or fails).
      if (!m->pending_finish) m->pending_finish = status;
      return;
    }
    m->finished = true;
    if (engine_->durable()) engine_->Persist(true);
    m->reactor->Finish(status);
    if (group_ && !closed_) {
      SetMembersLocked();  // its people and unacknowledged events go to the others now
      Pump();
    }
  }

  const ServiceConfig& config_;
  std::recursive_mutex mu_;
  std::unique_ptr<SubscriptionEngine> engine_;
  const uint32_t heartbeat_ms_;
  const bool summary_changes_;
  const bool group_;
  const std::string filter_bytes_;
  const Disclosure disclosure_;
  std::optional<CompiledFilter::ScopeFn> scope_;  // checked again as each event is sent
  std::map<uint64_t, Member> members_;
  uint64_t next_member_ = 1;
  int busy_ = 0;         // loops over members_ running
  bool closed_ = false;  // the last stream left
  bool pumping_ = false;
  bool repump_ = false;
};

class SubscribeReactor final : public SubscribeWriter {
 public:
  SubscribeReactor(const ServiceConfig& config, grpc::CallbackServerContext* ctx,
                   std::string durable_name)
      : config_(config), ctx_(ctx), durable_name_(std::move(durable_name)) {}

  // Starts the stream on a new session (`added`: register it with the hub)
  // or joins an existing group's.
  void Begin(std::shared_ptr<SubscribeSession> session, bool added, uint32_t max_batch) {
    if (added && !config_.hub->Add(session)) {
      Finish({grpc::StatusCode::UNAVAILABLE,
              "the broker is shutting down; reconnect to resume from your cursor"});
      return;
    }
    if (!session->Join(this, ctx_, max_batch, &member_)) {
      Finish({grpc::StatusCode::UNAVAILABLE,
              "the subscription's streams are closing; reconnect to resume from its cursor"});
      return;
    }
    session_ = std::move(session);
  }

  void FailNow(const grpc::Status& status) { Finish(status); }

  // Counts the stream against its principal's connections until it ends.
  store::Status EnterConnection(const Caller& caller) {
    store::Status s = config_.access->EnterConnection(caller);
    if (s.ok()) entered_ = caller;
    return s;
  }

  void OnWriteDone(bool ok) override {
    if (session_) session_->OnWriteDone(member_, ok);
  }
  void OnCancel() override {
    if (session_) session_->OnCancel(member_);
  }
  void OnDone() override {
    if (session_ && session_->Leave(member_)) {
      config_.hub->Remove(session_.get());
      if (!durable_name_.empty()) config_.hub->ReleaseDurable(durable_name_, session_.get());
    }
    if (entered_) config_.access->LeaveConnection(*entered_);
    delete this;
  }

 private:
  const ServiceConfig& config_;
  grpc::CallbackServerContext* const ctx_;
  const std::string durable_name_;
  std::shared_ptr<SubscribeSession> session_;
  uint64_t member_ = 0;
  std::optional<Caller> entered_;  // set while counted in its principal's connections
};

uint32_t OrDefault(uint32_t value, uint32_t def) { return value == 0 ? def : value; }

// Identifies a unary call's caller; false when refused (answered already).
bool IdentifyOrFinish(const ServiceConfig& config, grpc::CallbackServerContext* ctx,
                      grpc::ServerUnaryReactor* reactor, Caller* caller) {
  if (config.access == nullptr) return true;
  store::Status s = config.access->Identify(*ctx, caller);
  if (s.ok()) return true;
  reactor->Finish(ToGrpc(s));
  return false;
}

// OK if the caller may act on durable subscription `name`, owned by `owner`
// ("" when it predates ownership): the owner, or an operator (the
// "subscriptions" query). Denials are audited.
store::Status CheckOwner(AccessControl* access, const Caller& caller, const std::string& name,
                         const std::string& owner) {
  if (access == nullptr || (owner.empty() && access->allow_development()) ||
      (!owner.empty() && owner == caller.principal->id) ||
      caller.principal->HasQuery("subscriptions")) {
    return {};
  }
  return access->Deny(
      caller, "",
      store::Status::PermissionDenied(
          owner.empty() ? "subscription '" + name +
                              "' was created before subscriptions had owners; only an operator "
                              "(the policy's 'subscriptions' query) may use or delete it"
                        : "subscription '" + name + "' belongs to principal '" + owner + "'"));
}

// The owner recorded in a durable subscription's stored state.
std::string StoredOwner(store::EventStore* store, const std::string& name) {
  std::string bytes;
  icr::v1::internal::SubscriptionState state;
  if (store->GetSubscription(name, &bytes).ok() && state.ParseFromString(bytes)) {
    return state.owner();
  }
  return {};
}

// Records under this prefix are FHIR rest-hook definitions
// (adapters/fhir/resthook.h), kept beside the subscriptions they drive.
constexpr const char* kReservedPrefix = "resthook:";
bool IsReservedName(const std::string& name) { return name.rfind(kReservedPrefix, 0) == 0; }

// Where a new subscription starts: the first position to deliver.
store::Status StartPosition(store::EventStore* store, const icr::v1::StartAt& start,
                            uint64_t* first) {
  switch (start.start_case()) {
    case icr::v1::StartAt::kPosition:
      if (start.position() == 0) {
        return store::Status::InvalidArgument("start.position: positions start at 1");
      }
      *first = start.position();
      return {};
    case icr::v1::StartAt::kTime:
      if (!InTimestampRange(start.time())) {
        return store::Status::InvalidArgument(
            "start.time: must be a valid timestamp (years 1 to 9999, nanos 0..999999999)");
      }
      return store->FindPositionAtTime(ToMicros(start.time()), first);
    case icr::v1::StartAt::kEarliest:
      *first = 1;
      return {};
    case icr::v1::StartAt::kLatest:
    case icr::v1::StartAt::START_NOT_SET:
      *first = store->LastPosition() + 1;
      return {};
  }
  return {};
}

grpc::Status CheckRange(const char* field, uint32_t value, uint32_t lo, uint32_t hi) {
  if (value != 0 && (value < lo || value > hi)) {
    return Invalid(std::string(field) + ": " + std::to_string(value) + " is outside " +
                   std::to_string(lo) + ".." + std::to_string(hi));
  }
  return grpc::Status::OK;
}

}  // namespace

// ---------------------------------------------------------------------------
// Publish
// ---------------------------------------------------------------------------

grpc::ServerUnaryReactor* BrokerService::Publish(grpc::CallbackServerContext* ctx,
                                                 const grpc::ByteBuffer* raw_request,
                                                 grpc::ByteBuffer* raw_response) {
  auto* reactor = ctx->DefaultReactor();
  icr::v1::PublishRequest request;
  std::string problem;
  if (!ParseRequest(*raw_request, &request, &problem)) {
    reactor->Finish(Invalid(problem));
    return reactor;
  }
  ReleaseRequest(raw_request);
  if (!request.has_event()) {
    reactor->Finish(Invalid("event: is required"));
    return reactor;
  }
  std::vector<CareEvent> events(1);
  events[0].Swap(request.mutable_event());  // the request is ours: no copy
  const PeerIdentity caller = CallerIdentity(*ctx);
  config_.ingest->Publish(std::move(events), /*batch=*/false,
                          [reactor, raw_response](const store::Status& s,
                                                  std::vector<store::AppendResult> results) {
                            if (!s.ok()) {
                              reactor->Finish(ToGrpc(s));
                              return;
                            }
                            icr::v1::PublishResponse response;
                            FillResult(results[0], &response);
                            reactor->Finish(SerializeResponse(response, raw_response));
                          },
                          /*origin=*/0, &caller);
  return reactor;
}

grpc::ServerUnaryReactor* BrokerService::PublishBatch(grpc::CallbackServerContext* ctx,
                                                      const grpc::ByteBuffer* raw_request,
                                                      grpc::ByteBuffer* raw_response) {
  auto* reactor = ctx->DefaultReactor();
  icr::v1::PublishBatchRequest request;
  std::string problem;
  if (!ParseRequest(*raw_request, &request, &problem)) {
    reactor->Finish(Invalid(problem + " (nothing in this batch was stored)"));
    return reactor;
  }
  ReleaseRequest(raw_request);
  std::vector<CareEvent> events(request.events_size());
  for (int i = 0; i < request.events_size(); ++i) events[i].Swap(request.mutable_events(i));
  const PeerIdentity caller = CallerIdentity(*ctx);
  config_.ingest->Publish(std::move(events), /*batch=*/true,
                          [reactor, raw_response](const store::Status& s,
                                                  std::vector<store::AppendResult> results) {
                            if (s.code() == store::StatusCode::kInvalidArgument) {
                              reactor->Finish(
                                  Invalid(s.message() + " (nothing in this batch was stored)"));
                              return;
                            }
                            if (!s.ok()) {
                              reactor->Finish(ToGrpc(s));
                              return;
                            }
                            icr::v1::PublishBatchResponse response;
                            for (const auto& r : results) FillResult(r, response.add_results());
                            reactor->Finish(SerializeResponse(response, raw_response));
                          },
                          /*origin=*/0, &caller);
  return reactor;
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* BrokerService::PublishStream(
    grpc::CallbackServerContext* ctx) {
  return new PublishStreamReactor(config_, ctx);
}

// ---------------------------------------------------------------------------
// Subscribe and durable subscriptions
// ---------------------------------------------------------------------------

grpc::ServerWriteReactor<grpc::ByteBuffer>* BrokerService::Subscribe(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* raw_request) {
  // Subscribe is a raw method (responses are built from the stored event
  // bytes), so the request is parsed here.
  icr::v1::SubscribeRequest parsed;
  std::string parse_problem;
  const bool parsed_ok = ParseRequest(*raw_request, &parsed, &parse_problem);
  const icr::v1::SubscribeRequest* request = &parsed;
  const std::string& name = request->subscription();
  auto* reactor = new SubscribeReactor(config_, ctx, parsed_ok ? name : std::string());
  auto fail = [reactor](const grpc::Status& s) {
    reactor->FailNow(s);
    return reactor;
  };
  if (!parsed_ok) return fail(Invalid(parse_problem));
  if (request->group() && name.empty()) {
    return fail(Invalid("group: a consumer group shares a durable subscription; set subscription "
                        "to its name"));
  }
  if (auto p = ValidateFilter(request->filter()); !p.empty()) return fail(Invalid(p));
  for (auto g : {CheckRange("ack_timeout_ms", request->ack_timeout_ms(), 1000, 3600000),
                 CheckRange("max_attempts", request->max_attempts(), 1, 100),
                 CheckRange("max_in_flight", request->max_in_flight(), 1, 10000),
                 CheckRange("heartbeat_ms", request->heartbeat_ms(), 100, 3600000),
                 CheckRange("max_batch", request->max_batch(), 1, 1000)}) {
    if (!g.ok()) return fail(g);
  }
  const uint32_t max_batch = std::max<uint32_t>(request->max_batch(), 1);
  if (max_batch > 1 && request->summary_changes()) {
    return fail(Invalid("max_batch: batches carry events; with summary_changes each summary is "
                        "sent on its own (leave max_batch unset)"));
  }
  const uint32_t heartbeat_ms = request->heartbeat_ms() == 0 ? 15000 : request->heartbeat_ms();
  // Who subscribes, for what purpose: the policy's scope is applied on top
  // of the filter, and every delivery is minimised and audited.
  Disclosure disclosure;
  disclosure.access = config_.access;
  disclosure.subscription = name;
  disclosure.purpose = request->purpose();
  disclosure.legal_basis = request->legal_basis();
  if (AccessControl* access = config_.access) {
    Caller& caller = disclosure.caller;
    if (auto s = access->Identify(*ctx, &caller); !s.ok()) return fail(ToGrpc(s));
    if (auto s = access->CheckPurpose(caller, &disclosure.purpose, &disclosure.legal_basis);
        !s.ok()) {
      return fail(ToGrpc(s));
    }
    // A summary draws on everything known about the person: the same query
    // as GetCareSummary.
    if (request->summary_changes()) {
      if (auto s = access->RequireQuery(caller, "care_summary"); !s.ok()) return fail(ToGrpc(s));
    }
    if (request->filter().has_team() &&
        !IsDevelopmentPrincipal(caller) &&
        Upper(request->filter().team().organisation()) != caller.principal->organisation) {
      return fail(ToGrpc(access->Deny(
          caller, "",
          store::Status::PermissionDenied(
              "filter.team: principal '" + caller.principal->id + "' of organisation '" +
              caller.principal->organisation + "' may not act for a team of organisation '" +
              Upper(request->filter().team().organisation()) + "'"))));
    }
    if (auto s = reactor->EnterConnection(caller); !s.ok()) return fail(ToGrpc(s));
  }
  // Team routing: the team must be registered; its role and Place decide
  // what reaches it.
  std::optional<icr::v1::Team> team;
  if (request->filter().has_team()) {
    icr::v1::TeamRef ref = request->filter().team();
    OdsCodeProblem(ref.mutable_organisation(), "");  // upper-cases; shape checked above
    team.emplace();
    if (auto s = ReadTeam(config_.store, ref, &*team); !s.ok()) return fail(ToGrpc(s));
  }
  store::EventStore* store = config_.store;
  auto route = [&](SubscriptionEngine* e) {
    if (request->position_order()) e->DisableLanes();
    if (config_.access != nullptr) e->SetScope(config_.access->SubscribeScope(disclosure.principal_id(), disclosure.purpose));
    if (!team) return;
    e->SetTeam(*team, [store](const CareEvent& event, const icr::v1::TeamRef& ref) {
      return HasCareRelationship(store, event.nhs_number(), ref);
    });
  };

  std::unique_ptr<SubscriptionEngine> engine;
  if (name.empty()) {
    uint64_t first = 0;
    if (auto s = StartPosition(config_.store, request->start(), &first); !s.ok()) {
      return fail(ToGrpc(s));
    }
    engine = std::make_unique<SubscriptionEngine>(config_.hub, CompiledFilter(request->filter()),
                                                  first);
    route(engine.get());
    auto session = std::make_shared<SubscribeSession>(config_, std::move(engine), heartbeat_ms,
                                                      request->summary_changes(), false, "",
                                                      std::move(disclosure));
    reactor->Begin(session, /*added=*/true, max_batch);
    return reactor;
  }

  if (auto p = ValidateSubscriptionName(name); !p.empty()) return fail(Invalid(p));
  if (IsReservedName(name)) {
    return fail(Invalid("subscription: names starting with '" + std::string(kReservedPrefix) +
                        "' hold FHIR rest-hook definitions and cannot be subscribed to"));
  }
  // Claim the name before reading or writing anything, so a refused second
  // stream, an old stream still closing, or an administrative call cannot
  // interleave with this one.
  // What every member of a consumer group must agree on.
  const std::string filter_bytes = request->filter().SerializeAsString() + "|" +
                                   (request->summary_changes() ? "s" : "-") +
                                   (request->position_order() ? "p" : "-");
  auto placeholder = std::make_shared<ClaimPlaceholder>();
  if (!config_.hub->ClaimDurable(name, placeholder)) {
    // Taken: a consumer group's member may join it.
    auto holder = config_.hub->FindDurable(name);
    auto held = std::dynamic_pointer_cast<SubscribeSession>(holder);
    if (held && !held->Live()) {
      return fail({grpc::StatusCode::UNAVAILABLE,
                   "subscription '" + name +
                       "': its previous stream is still closing; retry in a moment"});
    }
    if (request->group() && holder && !held) {
      return fail({grpc::StatusCode::UNAVAILABLE,
                   "subscription '" + name +
                       "' is being connected or changed by another call; retry in a moment"});
    }
    if (held && config_.access != nullptr && held->principal() != disclosure.principal_id()) {
      return fail(ToGrpc(config_.access->Deny(
          disclosure.caller, "",
          store::Status::PermissionDenied("subscription '" + name + "' belongs to principal '" +
                                          held->principal() + "'"))));
    }
    if (request->group() && held && held->group()) {
      if (held->filter_bytes() != filter_bytes) {
        return fail({grpc::StatusCode::FAILED_PRECONDITION,
                     "subscription '" + name +
                         "': every member of a consumer group must send the same filter, "
                         "summary_changes and position_order as the connected members"});
      }
      reactor->Begin(held, /*added=*/false, max_batch);
      return reactor;
    }
    if (request->group() && held) {
      return fail({grpc::StatusCode::FAILED_PRECONDITION,
                   "subscription '" + name +
                       "' is connected as a single stream, not as a consumer group; close it, "
                       "then connect every member with group set"});
    }
    return fail({grpc::StatusCode::FAILED_PRECONDITION,
                 "subscription '" + name +
                     "' already has a connected stream; one stream per durable subscription "
                     "(close the other stream first, or connect every stream with group set "
                     "to share the work)"});
  }
  auto release = [&] { config_.hub->ReleaseDurable(name, placeholder.get()); };
  icr::v1::internal::SubscriptionState state;
  std::string bytes;
  store::Status got = config_.store->GetSubscription(name, &bytes);
  if (got.ok()) {
    if (!state.ParseFromString(bytes)) {
      release();
      return fail({grpc::StatusCode::DATA_LOSS,
                   "subscription '" + name +
                       "': its stored state (cursor) cannot be read; the events are intact. "
                       "Delete it (icrctl delete-subscription " + name +
                       ") and subscribe again from a known position or time"});
    }
  } else if (got.code() == store::StatusCode::kNotFound) {
    uint64_t first = 0;
    if (auto s = StartPosition(config_.store, request->start(), &first); !s.ok()) {
      release();
      return fail(ToGrpc(s));
    }
    state.set_name(name);
    state.set_cursor(first - 1);
    SetTimestamp(state.mutable_created_at(), NowMicros());
  } else {
    release();
    return fail(ToGrpc(got));
  }
  if (config_.access != nullptr) {
    // A durable subscription is its creator's: another principal may not
    // take over its cursor (an operator may, to repair it).
    const Caller& caller = disclosure.caller;
    if (got.ok()) {
      // An existing subscription: its owner's (one created before owners
      // existed: an operator's, outside the development profile).
      if (store::Status owned = CheckOwner(config_.access, caller, name, state.owner());
          !owned.ok()) {
        release();
        return fail(ToGrpc(owned));
      }
    }
    if (state.owner().empty()) state.set_owner(caller.principal->id);
  }
  state.set_purpose(disclosure.purpose);
  state.set_legal_basis(disclosure.legal_basis);
  *state.mutable_filter() = request->filter();
  // Settings the request leaves unset keep their stored (or default) values.
  state.set_ack_timeout_ms(OrDefault(request->ack_timeout_ms(),
                                     OrDefault(state.ack_timeout_ms(), 30000)));
  state.set_max_attempts(OrDefault(request->max_attempts(), OrDefault(state.max_attempts(), 5)));
  state.set_max_in_flight(OrDefault(request->max_in_flight(),
                                    OrDefault(state.max_in_flight(), 1000)));
  state.SerializeToString(&bytes);
  if (auto s = config_.store->PutSubscription(name, bytes, true); !s.ok()) {
    release();
    return fail(ToGrpc(s));
  }
  engine = std::make_unique<SubscriptionEngine>(config_.hub, config_.store, std::move(state));
  route(engine.get());
  auto session = std::make_shared<SubscribeSession>(config_, std::move(engine), heartbeat_ms,
                                                    request->summary_changes(), request->group(),
                                                    filter_bytes, std::move(disclosure));
  config_.hub->HandOverDurable(name, placeholder.get(), session);
  reactor->Begin(session, /*added=*/true, max_batch);
  return reactor;
}

grpc::ServerUnaryReactor* BrokerService::Ack(grpc::CallbackServerContext* ctx,
                                             const icr::v1::AckRequest* request,
                                             icr::v1::AckResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (!IdentifyOrFinish(config_, ctx, reactor, &caller)) return reactor;
  if (auto p = ValidateSubscriptionName(request->subscription()); !p.empty()) {
    reactor->Finish(Invalid(p));
    return reactor;
  }
  auto session = config_.hub->FindDurable(request->subscription());
  if (auto held = std::dynamic_pointer_cast<SubscribeSession>(session)) {
    if (auto s = CheckOwner(config_.access, caller, request->subscription(), held->principal());
        !s.ok()) {
      reactor->Finish(ToGrpc(s));
      return reactor;
    }
  }
  if (!session) {
    std::string bytes;
    store::Status s = config_.store->GetSubscription(request->subscription(), &bytes);
    if (s.code() == store::StatusCode::kNotFound) {
      reactor->Finish({grpc::StatusCode::NOT_FOUND,
                       "subscription '" + request->subscription() + "' does not exist"});
    } else if (!s.ok()) {
      reactor->Finish(ToGrpc(s));
    } else {
      reactor->Finish({grpc::StatusCode::FAILED_PRECONDITION,
                       "subscription '" + request->subscription() +
                           "' has no connected stream; unacknowledged events are redelivered "
                           "when it reconnects"});
    }
    return reactor;
  }
  std::vector<uint64_t> positions(request->positions().begin(), request->positions().end());
  AckOutcome outcome = session->Ack(positions);
  response->set_cursor(outcome.cursor);
  for (uint64_t p : outcome.unknown_positions) response->add_unknown_positions(p);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* BrokerService::ListParked(grpc::CallbackServerContext* ctx,
                                                    const icr::v1::ListParkedRequest* request,
                                                    icr::v1::ListParkedResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (!IdentifyOrFinish(config_, ctx, reactor, &caller)) return reactor;
  if (auto p = ValidateSubscriptionName(request->subscription()); !p.empty()) {
    reactor->Finish(Invalid(p));
    return reactor;
  }
  if (request->limit() > 1000) {
    reactor->Finish(Invalid("limit: " + std::to_string(request->limit()) +
                            " exceeds the limit of 1000"));
    return reactor;
  }
  std::string bytes;
  store::Status s = config_.store->GetSubscription(request->subscription(), &bytes);
  if (!s.ok()) {
    reactor->Finish(s.code() == store::StatusCode::kNotFound
                        ? grpc::Status(grpc::StatusCode::NOT_FOUND,
                                       "subscription '" + request->subscription() +
                                           "' does not exist")
                        : ToGrpc(s));
    return reactor;
  }
  icr::v1::internal::SubscriptionState owner_state;
  owner_state.ParseFromString(bytes);
  if (auto d = CheckOwner(config_.access, caller, request->subscription(), owner_state.owner());
      !d.ok()) {
    reactor->Finish(ToGrpc(d));
    return reactor;
  }
  size_t limit = request->limit() == 0 ? 100 : request->limit();
  std::vector<std::pair<uint64_t, std::string>> parked;
  s = config_.store->ListParked(request->subscription(), limit, &parked);
  for (size_t i = 0; s.ok() && i < parked.size(); ++i) {
    icr::v1::internal::ParkedRecord record;
    record.ParseFromString(parked[i].second);
    store::EventPtr event;
    s = config_.store->Get(parked[i].first, &event);
    if (!s.ok()) break;
    auto* out = response->add_parked();
    *out->mutable_event() = event->event;
    out->set_attempts(record.attempts());
    *out->mutable_parked_at() = record.parked_at();
  }
  if (s.ok() && config_.access != nullptr) {
    // Parked events are disclosed like deliveries: only those in the
    // caller's own scope (for the subscription's purpose), audited first,
    // then minimised to the caller's profile.
    CompiledFilter::ScopeFn scope =
        config_.access->SubscribeScope(caller.principal->id, owner_state.purpose());
    auto* rows = response->mutable_parked();
    rows->erase(std::remove_if(rows->begin(), rows->end(),
                               [&](const icr::v1::ParkedEvent& p) { return !scope(p.event()); }),
                rows->end());
    std::vector<const CareEvent*> shown;
    for (const auto& p : response->parked()) shown.push_back(&p.event());
    s = AuditDisclosure(config_.access, caller, icr::v1::DELIVERED, owner_state.purpose(),
                        owner_state.legal_basis(),
                        "parked events of subscription " + request->subscription(), shown);
    if (!s.ok()) response->Clear();
    for (auto& p : *response->mutable_parked()) {
      if (caller.principal->profile) governance::MinimiseEvent(*caller.principal->profile, p.mutable_event());
    }
  }
  reactor->Finish(ToGrpc(s));
  return reactor;
}

grpc::ServerUnaryReactor* BrokerService::ReplayParked(grpc::CallbackServerContext* ctx,
                                                      const icr::v1::ReplayParkedRequest* request,
                                                      icr::v1::ReplayParkedResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (!IdentifyOrFinish(config_, ctx, reactor, &caller)) return reactor;
  const std::string& name = request->subscription();
  if (auto p = ValidateSubscriptionName(name); !p.empty()) {
    reactor->Finish(Invalid(p));
    return reactor;
  }
  if (auto s = CheckOwner(config_.access, caller, name, StoredOwner(config_.store, name));
      !s.ok()) {
    reactor->Finish(ToGrpc(s));
    return reactor;
  }
  std::vector<uint64_t> positions(request->positions().begin(), request->positions().end());
  if (auto session = config_.hub->FindDurable(name)) {
    uint32_t count = 0;
    store::Status s = session->Replay(positions, &count);
    response->set_replayed(count);
    reactor->Finish(ToGrpc(s));
    return reactor;
  }
  // Not connected: flag the records; the engine queues them on reconnect.
  // Hold the name meanwhile, so no stream connects and moves the cursor
  // while the records are rewritten with the state read here.
  auto placeholder = std::make_shared<ClaimPlaceholder>();
  if (!config_.hub->ClaimDurable(name, placeholder)) {
    reactor->Finish({grpc::StatusCode::FAILED_PRECONDITION,
                     "subscription '" + name + "' is being connected or changed; try again"});
    return reactor;
  }
  struct Release {
    Hub* hub;
    const std::string& name;
    const Session* held;
    ~Release() { hub->ReleaseDurable(name, held); }
  } release{config_.hub, name, placeholder.get()};
  std::string state;
  store::Status s = config_.store->GetSubscription(name, &state);
  if (!s.ok()) {
    reactor->Finish(s.code() == store::StatusCode::kNotFound
                        ? grpc::Status(grpc::StatusCode::NOT_FOUND,
                                       "subscription '" + name + "' does not exist")
                        : ToGrpc(s));
    return reactor;
  }
  std::vector<std::pair<uint64_t, std::string>> parked;
  s = config_.store->ListParked(name, 100000, &parked);
  std::set<uint64_t> wanted(positions.begin(), positions.end());
  uint32_t count = 0;
  for (size_t i = 0; s.ok() && i < parked.size(); ++i) {
    if (!wanted.empty() && !wanted.count(parked[i].first)) continue;
    icr::v1::internal::ParkedRecord record;
    record.ParseFromString(parked[i].second);
    if (record.replay_requested()) continue;  // already asked for
    record.set_replay_requested(true);
    s = config_.store->PutParked(name, parked[i].first, record.SerializeAsString(), state);
    if (s.ok()) ++count;
  }
  response->set_replayed(count);
  reactor->Finish(ToGrpc(s));
  return reactor;
}

grpc::ServerUnaryReactor* BrokerService::DeleteSubscription(
    grpc::CallbackServerContext* ctx, const icr::v1::DeleteSubscriptionRequest* request,
    icr::v1::DeleteSubscriptionResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (!IdentifyOrFinish(config_, ctx, reactor, &caller)) return reactor;
  const std::string& name = request->subscription();
  if (auto p = ValidateSubscriptionName(name); !p.empty()) {
    reactor->Finish(Invalid(p));
    return reactor;
  }
  if (auto s = CheckOwner(config_.access, caller, name, StoredOwner(config_.store, name));
      !s.ok()) {
    reactor->Finish(ToGrpc(s));
    return reactor;
  }
  // Hold the name while deleting, so a stream cannot connect halfway.
  auto placeholder = std::make_shared<ClaimPlaceholder>();
  if (!config_.hub->ClaimDurable(name, placeholder)) {
    reactor->Finish({grpc::StatusCode::FAILED_PRECONDITION,
                     "subscription '" + name + "' has a connected stream; close it first"});
    return reactor;
  }
  std::string bytes;
  store::Status s = config_.store->GetSubscription(name, &bytes);
  if (s.ok()) s = config_.store->DeleteSubscription(name);
  config_.hub->ReleaseDurable(name, placeholder.get());
  if (s.code() == store::StatusCode::kNotFound) {
    reactor->Finish({grpc::StatusCode::NOT_FOUND, "subscription '" + name + "' does not exist"});
    return reactor;
  }
  reactor->Finish(ToGrpc(s));
  return reactor;
}

grpc::ServerUnaryReactor* BrokerService::ListSubscriptions(
    grpc::CallbackServerContext* ctx, const icr::v1::ListSubscriptionsRequest* request,
    icr::v1::ListSubscriptionsResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (!IdentifyOrFinish(config_, ctx, reactor, &caller)) return reactor;
  // Operators (the "subscriptions" query) see every subscription; others
  // their own.
  const bool all_of_them =
      config_.access == nullptr || caller.principal->HasQuery("subscriptions");
  std::vector<std::pair<std::string, std::string>> all;
  store::Status s = config_.store->ListSubscriptions(&all);
  const uint64_t last = config_.store->LastPosition();
  for (size_t i = 0; s.ok() && i < all.size(); ++i) {
    if (IsReservedName(all[i].first)) continue;
    icr::v1::internal::SubscriptionState state;
    if (!state.ParseFromString(all[i].second)) continue;
    if (!all_of_them && state.owner() != caller.principal->id) continue;
    auto* info = response->add_subscriptions();
    info->set_name(state.name());
    *info->mutable_filter() = state.filter();
    *info->mutable_created_at() = state.created_at();
    auto session = config_.hub->FindDurable(state.name());
    if (session) {
      info->set_connected(true);
      info->set_in_flight(session->InFlight());
    }
    info->set_cursor(state.cursor());
    info->set_lag(last > state.cursor() ? last - state.cursor() : 0);
    std::vector<std::pair<uint64_t, std::string>> parked;
    if (config_.store->ListParked(state.name(), 100000, &parked).ok()) {
      info->set_parked(static_cast<uint32_t>(parked.size()));
    }
  }
  reactor->Finish(ToGrpc(s));
  return reactor;
}

// ---------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------

grpc::ServerUnaryReactor* BrokerService::GetPatientHistory(
    grpc::CallbackServerContext* ctx, const icr::v1::GetPatientHistoryRequest* request,
    icr::v1::GetPatientHistoryResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (!IdentifyOrFinish(config_, ctx, reactor, &caller)) return reactor;
  std::string nhs = NormaliseNhsNumber(request->nhs_number());
  if (auto p = NhsNumberProblem(nhs); !p.empty()) {
    reactor->Finish(Invalid("nhs_number: " + p));
    return reactor;
  }
  icr::v1::Purpose purpose = request->purpose();
  std::string legal_basis;
  if (AccessControl* access = config_.access) {
    store::Status s =
        access->CheckPersonRead(caller, "patient_history", nhs, "history", &purpose, &legal_basis);
    if (!s.ok()) {
      reactor->Finish(ToGrpc(s));
      return reactor;
    }
  }
  if (request->page_size() > 1000) {
    reactor->Finish(Invalid("page_size: " + std::to_string(request->page_size()) +
                            " exceeds the limit of 1000"));
    return reactor;
  }
  const size_t page_size = request->page_size() == 0 ? 100 : request->page_size();
  uint64_t after = 0;
  if (!request->page_token().empty()) {
    // Tokens are the positions this call hands out: 1 to 20 digits, nothing else.
    const std::string& token = request->page_token();
    errno = 0;
    after = token.size() <= 20 && token.find_first_not_of("0123456789") == std::string::npos
                ? std::strtoull(token.c_str(), nullptr, 10)
                : 0;
    if (errno == ERANGE || after == 0) {
      reactor->Finish(Invalid("page_token: not a token from a previous response"));
      return reactor;
    }
  }
  // A retired number answers for its survivor; the survivor's history
  // includes the numbers merged into it.
  std::vector<std::string> numbers;
  {
    std::string survivor;
    std::vector<std::string> retired;
    store::Status s = ReadPersonNumbers(config_.store, nhs, &survivor, &retired);
    if (!s.ok()) {
      reactor->Finish(ToGrpc(s));
      return reactor;
    }
    if (survivor != nhs) response->set_surviving_nhs_number(survivor);
    numbers.push_back(survivor);
    for (const std::string& r : retired) {
      numbers.push_back(r);
      response->add_merged_nhs_numbers(r);
    }
  }
  for (const auto& [name, t] : {std::pair{"from", &request->from()}, std::pair{"to", &request->to()}}) {
    if (!InTimestampRange(*t)) {
      reactor->Finish(Invalid(std::string(name) +
                              ": must be a valid timestamp (years 1 to 9999, nanos "
                              "0..999999999)"));
      return reactor;
    }
  }
  std::set<int> types(request->event_types().begin(), request->event_types().end());
  const bool has_from = request->has_from(), has_to = request->has_to();
  const int64_t from = ToMicros(request->from()), to = ToMicros(request->to());
  // Scan until one match past the page is seen, so next_page_token is set
  // only when another page really exists.
  constexpr size_t kChunk = 256;
  uint64_t last_returned = after;
  bool more_matches = false, exhausted = false;
  while (!more_matches && !exhausted) {
    std::vector<store::EventPtr> chunk;
    store::Status s = ReadPeople(config_.store, numbers, after, kChunk, &chunk, &exhausted);
    if (!s.ok()) {
      reactor->Finish(ToGrpc(s));
      return reactor;
    }
    for (const auto& e : chunk) {
      after = e->position;
      const CareEvent& ev = e->event;
      const int64_t occurred = ToMicros(ev.occurred_at());
      // Only the event types the principal may receive are in its view of
      // the history.
      const bool in_scope = caller.principal == nullptr ||
                            caller.principal->subscribe.all_types ||
                            caller.principal->subscribe.event_types.count(ev.event_type()) != 0;
      if (in_scope && (types.empty() || types.count(ev.event_type())) &&
          (!has_from || occurred >= from) && (!has_to || occurred < to)) {
        if (static_cast<size_t>(response->events_size()) == page_size) {
          more_matches = true;
          break;
        }
        *response->add_events() = ev;
        last_returned = e->position;
      }
    }
  }
  if (more_matches) response->set_next_page_token(std::to_string(last_returned));
  if (config_.access != nullptr) {
    // Audited before it is answered; minimised to the caller's profile.
    std::vector<const CareEvent*> shown;
    for (const CareEvent& e : response->events()) shown.push_back(&e);
    store::Status s;
    if (shown.empty()) {
      // A read that found nothing still looked the person up.
      icr::v1::AuditRecord r = config_.access->Record(caller, icr::v1::HISTORY_READ);
      r.set_nhs_number(nhs);
      r.set_purpose(purpose);
      r.set_legal_basis(legal_basis);
      r.set_detail("GetPatientHistory (no events)");
      s = config_.access->Audit({std::move(r)});
    } else {
      s = AuditDisclosure(config_.access, caller, icr::v1::HISTORY_READ, purpose, legal_basis,
                          "GetPatientHistory", shown);
    }
    if (!s.ok()) {
      response->Clear();
      reactor->Finish(ToGrpc(s));
      return reactor;
    }
    if (caller.principal->profile && !caller.principal->profile->full()) {
      for (CareEvent& e : *response->mutable_events()) {
        governance::MinimiseEvent(*caller.principal->profile, &e);
      }
    }
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* BrokerService::GetStatus(grpc::CallbackServerContext* ctx,
                                                   const icr::v1::GetStatusRequest* request,
                                                   icr::v1::GetStatusResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (!IdentifyOrFinish(config_, ctx, reactor, &caller)) return reactor;
  response->set_version(ICR_VERSION);
  response->set_last_position(config_.store->LastPosition());
  response->set_events_stored(config_.store->LastPosition());
  response->set_subscriptions_connected(static_cast<uint32_t>(config_.hub->connected()));
  std::vector<std::pair<std::string, std::string>> all;
  if (config_.store->ListSubscriptions(&all).ok()) {
    uint32_t durable = 0;
    for (const auto& [name, value] : all) durable += IsReservedName(name) ? 0 : 1;
    response->set_durable_subscriptions(durable);
  }
  response->set_durability(config_.durability);
  SetTimestamp(response->mutable_started_at(), config_.started_at_micros);
  response->set_data_dir(config_.data_dir);
  response->set_subscriptions_following(static_cast<uint32_t>(config_.hub->followers()));
  response->set_subscribers_cut_off(config_.subscribers_cut_off->load(std::memory_order_relaxed));
  const store::StoreStats stats = config_.store->Stats();
  response->set_write_groups(stats.write_batches);
  response->set_write_groups_cut(stats.groups_cut);
  response->set_store_write_error(stats.write_error);
  response->set_store_write_recoveries(stats.write_recoveries);
  response->set_store_write_error_permanent(stats.write_error_permanent);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace icr::broker
