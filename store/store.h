// EventStore: the durable log of care events, keyed globally by position and
// per person by NHS number, plus the broker's durable bookkeeping
// (subscription cursors, parked events).
//
// The broker depends only on this interface, so a fault-injecting store or a
// clustered log can replace the RocksDB implementation (OpenRocksDbStore).
//
// Contract:
//  - AppendAsync is the only way events enter the store. A call's events are
//    stored atomically (all or none) and are durable (WAL synced, in the
//    default durability) before `done` runs with OK. Concurrent calls share
//    one sync (group commit).
//  - The store is the sequencer: it assigns position (1, 2, 3, ...),
//    event_id (a UUID) and recorded_at (non-decreasing with position).
//  - Idempotency: an event whose (source_system_id, source_message_id) was
//    stored before is not stored again; its result is the original position
//    and event id with duplicate = true. Within one call, a second event with
//    the same key is a duplicate of the first.
//  - Only committed events are visible to readers and to the commit listener.
//  - A failed write (a full or failing disk) fails its calls with nothing
//    stored (kResourceExhausted for a full disk, kUnavailable otherwise), and
//    later calls fail the same way, at once, while reads go on. Every 200 ms
//    the store tries to resume; once the disk takes writes again, appends
//    succeed with no restart. RocksDB resumes from a full disk; other I/O
//    errors are usually fatal to it, and then only a restart helps (Stats()
//    reports the error while it lasts, and whether it is permanent).
//
// Thread-safety: every method may be called from any thread. `done` callbacks
// and the commit listener run on the store's writer thread: they must not
// block and must not call AppendAsync synchronously waiting for it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "icr/v1/events.pb.h"
#include "icr/v1/governance_types.pb.h"
#include "store/status.h"

namespace rocksdb {
class Env;
}

namespace icr::store {

// A committed event. Immutable once published; shared between the commit
// listener, readers and subscriber queues.
struct StoredEvent {
  uint64_t position = 0;
  icr::v1::CareEvent event;  // with position, event_id, recorded_at filled in
  // `event` serialized, exactly as stored: subscribers are sent these bytes
  // (serialised once, whatever the number of subscribers).
  std::string encoded;
};
using EventPtr = std::shared_ptr<const StoredEvent>;

struct AppendResult {
  uint64_t position = 0;
  std::string event_id;
  int64_t recorded_at_micros = 0;  // microseconds since the Unix epoch
  bool duplicate = false;
};

using AppendCallback = std::function<void(const Status&, std::vector<AppendResult>)>;
using CommitListener = std::function<void(const std::vector<EventPtr>& committed)>;

struct StoreStats {
  uint64_t last_position = 0;
  uint64_t appended_events = 0;   // new events stored since open
  uint64_t duplicate_events = 0;  // resends answered since open
  uint64_t write_batches = 0;     // synced write batches since open (group commits)
  uint64_t groups_cut = 0;        // groups closed early for a waiting urgent call
  // Empty while the store takes writes; otherwise why it refuses them (a
  // full or failing disk). It retries by itself (the contract above) unless
  // write_error_permanent: then only a restart (after fixing the disk) helps.
  std::string write_error;
  bool write_error_permanent = false;
  uint64_t write_recoveries = 0;  // times writing resumed after such an error
};

// The outcome of EventStore::VerifyAudit.
struct AuditVerifyResult {
  uint64_t checked = 0;             // records checked
  bool intact = true;
  uint64_t first_bad_sequence = 0;  // when not intact
  std::string problem;              // when not intact: what is wrong
  std::string head_hash;            // SHA-256 (32 bytes) of the last record
};

// Derived state kept beside the log (the `state` column family): workflow
// records, indexes and per-person summaries. It changes only inside the
// atomic write of the event that changes it, so state and log never
// disagree, after a crash or otherwise.
//
// A StateTxn is the writer thread's view while it builds one group: reads
// see the writes of earlier events of the same group.
class StateTxn {
 public:
  virtual ~StateTxn() = default;
  // The value after every earlier event of the group; kNotFound if none.
  virtual Status Get(std::string_view key, std::string* value) = 0;
  virtual void Put(std::string_view key, std::string_view value) = 0;
  virtual void Delete(std::string_view key) = 0;
  // Adds an operand to an accumulated key (a RocksDB merge). Reads fold the
  // operands onto the stored value with StateMachine::Fold, so the write
  // path never reads the value (used for the per-person summary).
  virtual void Accumulate(std::string_view key, std::string_view operand) = 0;
};

// The rules that derive state from events. Set in StoreOptions; the store
// calls it on its writer thread.
class StateMachine {
 public:
  virtual ~StateMachine() = default;
  using ScanFn = std::function<Status(
      const std::string& prefix,
      const std::function<bool(std::string_view key, std::string_view value)>& visit)>;
  // Called as the store opens, before any Apply, with a scan of the state
  // kept so far (e.g. to rebuild in-memory indexes), and again when the
  // store resumes writing after a failed write (a failed group may have
  // applied events that were never stored): it must replace, not add to,
  // what it holds. Not OK: the store does not open (or resume).
  virtual Status Recover(const ScanFn& scan) { return Status::Ok(); }
  // Called for each new (non-duplicate) event, in position order, after its
  // position, event_id and recorded_at are assigned and before it is
  // serialised: it may fill the event's other broker-assigned fields. A
  // non-OK status refuses the event's whole call (nothing of it is stored)
  // with that status; the other calls of the group go on.
  virtual Status Apply(icr::v1::CareEvent* event, StateTxn* txn) = 0;
  // Folds operands (oldest first) onto `existing` (null: none) into `out`.
  // Deterministic and without I/O: RocksDB calls it on reads and compactions
  // from any thread. Returns false if an operand is corrupt.
  virtual bool Fold(std::string_view key, const std::string* existing,
                    const std::vector<std::string_view>& operands, std::string* out) const = 0;
};

class EventStore {
 public:
  virtual ~EventStore() = default;

  // Stores `events` (already validated by the caller) and calls `done` once.
  // On failure nothing of this call is stored and `done` gets the error
  // (kUnavailable for I/O errors, kResourceExhausted when the queue is full,
  // kAborted while closing).
  virtual void AppendAsync(std::vector<icr::v1::CareEvent> events, AppendCallback done) = 0;

  // As AppendAsync, for a call that must stay in order with the earlier
  // calls of the same `origin` (one client stream): an URGENT call may be
  // written ahead of queued routine and bulk calls (the urgent lane), but
  // never ahead of its own origin's calls about the same person. Calls of
  // origin 0 (AppendAsync) are independent: concurrent clients have no order
  // between them. A store without lanes writes every call in arrival order.
  virtual void AppendOrdered(std::vector<icr::v1::CareEvent> events, uint64_t origin,
                             AppendCallback done) {
    (void)origin;
    AppendAsync(std::move(events), std::move(done));
  }

  // Called with every committed group of new (non-duplicate) events, in
  // position order, after their `done` callbacks' data is durable. Set it
  // before the first append; not thread-safe against concurrent appends.
  virtual void SetCommitListener(CommitListener listener) = 0;

  // The highest committed position, 0 when empty.
  virtual uint64_t LastPosition() const = 0;

  // Up to `max` committed events with position >= `from`, in position order.
  virtual Status ReadFrom(uint64_t from, size_t max, std::vector<EventPtr>* out) = 0;

  // One event by position; kNotFound if there is none.
  virtual Status Get(uint64_t position, EventPtr* out) = 0;

  // Up to `max` events of one person with position > `after`, oldest first.
  virtual Status ReadPatient(const std::string& nhs_number, uint64_t after, size_t max,
                             std::vector<EventPtr>* out) = 0;

  // Urgent lane index: up to `max` positions >= `from` of URGENT events, with
  // the NHS number of each, in position order. Lets a subscriber that is
  // behind deliver urgent events ahead of its backlog (broker/delivery.h).
  // A store without the index returns nothing.
  virtual Status ReadUrgent(uint64_t from, size_t max,
                            std::vector<std::pair<uint64_t, std::string>>* out) {
    (void)from;
    (void)max;
    out->clear();
    return Status::Ok();
  }

  // The first position whose recorded_at >= `micros` (LastPosition()+1 when
  // there is none). Uses that recorded_at is non-decreasing with position.
  virtual Status FindPositionAtTime(int64_t micros, uint64_t* position) = 0;

  // Durable subscription records: name -> opaque bytes. `sync` makes the write
  // durable before returning.
  virtual Status PutSubscription(const std::string& name, const std::string& value, bool sync) = 0;
  virtual Status GetSubscription(const std::string& name, std::string* value) = 0;  // kNotFound
  // Removes the record and all its parked entries in one atomic write.
  virtual Status DeleteSubscription(const std::string& name) = 0;
  virtual Status ListSubscriptions(
      std::vector<std::pair<std::string, std::string>>* name_values) = 0;

  // Parked events per subscription: (name, position) -> opaque bytes.
  // PutParked writes the parked record and the subscription record together
  // atomically, so a cursor never passes an event that is not parked.
  virtual Status PutParked(const std::string& name, uint64_t position, const std::string& value,
                           const std::string& subscription_value) = 0;
  virtual Status DeleteParked(const std::string& name, uint64_t position) = 0;
  // Oldest first, at most `max`.
  virtual Status ListParked(const std::string& name, size_t max,
                            std::vector<std::pair<uint64_t, std::string>>* out) = 0;

  // Derived state (see StateMachine). Reads see committed writes.
  virtual Status GetState(const std::string& key, std::string* value) = 0;  // kNotFound
  // Visits keys starting with `prefix` in key order until `visit` returns
  // false.
  virtual Status ScanState(
      const std::string& prefix,
      const std::function<bool(std::string_view key, std::string_view value)>& visit) = 0;
  // Writes a state key outside any event (e.g. a team registration). Never
  // use it for keys the StateMachine writes.
  virtual Status PutState(const std::string& key, const std::string& value) = 0;

  // Audit trail (docs/governance.md, "Audit"), in its own column family.
  //
  // AppendAudit stores `records` atomically, in order, after every record
  // appended before: it assigns each its sequence (1, 2, 3, ...), `at` when
  // unset, and previous_hash (SHA-256 of the previous record's stored bytes;
  // 32 zero bytes for the first), and fills them in. Records naming an NHS
  // number are also indexed by it (AuditForPerson). The trail is its own
  // database (<data_dir>/audit, its own WAL): the write reaches that WAL
  // before it returns, never waiting for the event log's fsync, and is
  // synced within about 100 ms. Not OK: nothing of the call was stored, and
  // the caller must not disclose what it audits.
  virtual Status AppendAudit(std::vector<icr::v1::AuditRecord>* records) {
    (void)records;
    return Status(StatusCode::kUnavailable, "this store keeps no audit trail");
  }
  // Up to `max` records with sequence >= `from`, in sequence order, exactly
  // as stored (a record that does not parse is kCorruption naming it).
  virtual Status ReadAudit(uint64_t from, size_t max, std::vector<icr::v1::AuditRecord>* out) {
    (void)from, (void)max, (void)out;
    return Status(StatusCode::kUnavailable, "this store keeps no audit trail");
  }
  // Walks the chain from the first record: each record's previous_hash must
  // equal the hash of the record before it, sequences must be contiguous,
  // and the last must match the stored head (sequence and hash), so an
  // edited, removed, reordered or truncated record is found. `progress` is
  // called every 10,000 records with (checked, total). Sets `result`; the
  // returned status is for I/O errors only.
  virtual Status VerifyAudit(const std::function<void(uint64_t, uint64_t)>& progress,
                             AuditVerifyResult* result) {
    (void)progress, (void)result;
    return Status(StatusCode::kUnavailable, "this store keeps no audit trail");
  }
  // Up to `max` records about one person with sequence > `after`, oldest
  // first (a subject access request: who saw this person's record).
  virtual Status AuditForPerson(const std::string& nhs_number, uint64_t after, size_t max,
                                std::vector<icr::v1::AuditRecord>* out) {
    (void)nhs_number, (void)after, (void)max, (void)out;
    return Status(StatusCode::kUnavailable, "this store keeps no audit trail");
  }

  // Retention: replaces the stored event at `position` by `stub` (same
  // position, event_id, nhs_number and event_type; purged_at set; payload
  // cleared), keeping every index entry. The event's idempotency key stays,
  // so a resend is still answered as a duplicate. kNotFound if no such
  // event; kInvalidArgument if the stub does not match the event.
  virtual Status ReplaceWithStub(uint64_t position, const icr::v1::CareEvent& stub) {
    (void)position, (void)stub;
    return Status(StatusCode::kUnavailable, "this store cannot purge events");
  }

  virtual StoreStats Stats() const = 0;

  // Stops accepting appends, completes those queued, flushes and closes.
  // Idempotent; the destructor calls it.
  virtual void Close() = 0;
};

enum class Durability {
  kSync,     // WAL fsync before acknowledging (default)
  kRelaxed,  // WAL written, synced in the background about every 100 ms
};

struct StoreOptions {
  // Directory of the RocksDB database; created if missing.
  std::string data_dir;
  // Default: kSync.
  Durability durability = Durability::kSync;
  // Most events waiting to be written before AppendAsync answers
  // kResourceExhausted. Default: 200,000. Calls carrying an URGENT event may
  // use 10% more, so a bulk load that fills the queue cannot refuse them.
  size_t max_queued_events = 200000;
  // Most events in one write batch (one sync). Default: 8,192.
  size_t max_batch_events = 8192;
  // Most events in a group without URGENT calls (urgent calls are written
  // in groups of their own). Smaller groups let an urgent publish that
  // arrives during a bulk load wait less for the group in progress.
  // Default: 512.
  size_t max_routine_batch_events = 512;
  // The most of the writer's time groups of BULK events may take: after
  // such a group the writer pauses for (1 - share) / share of the time it
  // took (at most 50 ms; an urgent call ends the pause), leaving CPU to
  // urgent and routine traffic. 1: no pause. Default: 0.3 (measured in
  // docs/benchmarks.md, W4).
  double bulk_share = 0.3;
  // RocksDB block cache. Default: 256 MiB.
  size_t block_cache_bytes = 256u << 20;
  // Derives state from events (null: no derived state). Must be the same
  // rules at every open of a data directory.
  std::shared_ptr<StateMachine> state_machine;
  // The RocksDB environment (files, threads, clock); null: the default.
  // Tests pass one over a fault-injecting filesystem (a full disk, a power
  // cut). Must outlive the store.
  rocksdb::Env* env = nullptr;
  // A write-ahead log damaged before its end (a record failing its checksum
  // with more records after it) means acknowledged events may follow the
  // damage. false (the default): refuse to open, with a message naming the
  // damage and the next step. true: recover everything before the damaged
  // record, drop what follows, and log an alert with the last position kept
  // (the operator's choice, after copying the directory aside). A log cut
  // short at its end (a torn last write) is recovered either way.
  bool accept_wal_damage = false;
};

// Opens (creating if needed) the RocksDB store. Recovers after a clean or
// unclean stop; start-up time does not depend on the number of events.
Status OpenRocksDbStore(const StoreOptions& options, std::unique_ptr<EventStore>* out);

}  // namespace icr::store
