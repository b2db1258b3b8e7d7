// RocksDbStore: the RocksDB implementation of EventStore (contract in
// store/store.h, key layout in store/keys.h).
//
// Write path (group commit): AppendAsync puts a call on a bounded queue and
// returns. One writer thread takes everything waiting (up to
// max_batch_events, never splitting a call), resolves idempotency, assigns
// position / event_id / recorded_at, writes the whole group as ONE
// rocksdb::WriteBatch with one WAL sync, publishes the new last position, then
// runs the commit listener and the calls' callbacks.
//
// Read path: readers go to RocksDB directly and never look above the
// published last position, so they see only committed events.
//
// Failure policy: a failed group write fails every call of the group and
// rolls the positions back; the store then refuses further appends at once
// (reads go on). With each later group (at most every kResumeInterval) the
// writer asks RocksDB to resume (DB::Resume). Resuming flushes every memtable
// and starts a new WAL, so the WAL that held the failed batch is never
// replayed: the failed batch cannot reappear after a crash, and its
// positions can be reused without pointing idempotency records at other
// events. Only then does the writer take appends again, after re-reading the
// last position and rebuilding the state machine's memory (the failed group
// may have left it ahead of the store). An error RocksDB cannot resume from
// (fatal) stays until the broker is restarted.
//
// Writes from other threads (audit records, retention stubs, subscriptions,
// parked events, state keys) go straight to RocksDB (SideWrite). One that
// fails with an I/O error has left RocksDB refusing writes with its WAL in
// error, like a failed group: the writer thread is told, refuses publishes
// and resumes as above, and nothing syncs that WAL meanwhile (Debian's
// RocksDB asserts on syncing a failed WAL).
//
// Audit trail: a hash chain in the `audit` column family (keys below),
// appended under audit_mu_ (the chain is one total order) in one WriteBatch
// per call with the head; the head is kept in memory, recovered at open.
//
// Thread-safety: see store.h. Internally: mu_ guards the queue; db_mu_ guards
// the lifetime of db_ (shared for every use, exclusive to close); the writer
// thread alone touches the write-side state (last_recorded_micros_,
// write_error_); audit_mu_ guards the audit trail's head; wal_mu_ keeps WAL
// syncs apart from side writes.
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <openssl/evp.h>
#include <rocksdb/cache.h>
#include <rocksdb/convenience.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/iterator.h>
#include <rocksdb/merge_operator.h>
#include <rocksdb/options.h>
#include <rocksdb/snapshot.h>
#include <rocksdb/slice_transform.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "store/keys.h"
#include "store/store.h"
#include "store/timestamp.h"

namespace icr::store {
namespace {

using icr::v1::CareEvent;

// Column families, in the order their handles are kept.
enum Cf : size_t {
  kDefault = 0,
  kEvents,
  kPatient,
  kIdempotency,
  kCursors,
  kParked,
  kState,
  kLanes,
  kNumCfs
};
constexpr const char* kCfNames[kNumCfs] = {"default", "events", "patient", "idempotency",
                                           "cursors", "parked", "state",   "lanes"};

// The audit trail (store.h) is a RocksDB database of its own in
// <data_dir>/audit, with its own write-ahead log: appending a record never
// waits for the event log's group fsync (a delivery writes its record before
// it is sent), and the event writer never waits for audit writes. Its keys:
//   "r" + BE64(sequence)               -> AuditRecord bytes (deterministic)
//   "p" + nhs_number + BE64(sequence)  -> empty (AuditForPerson's index)
//   "h"                                -> BE64(last sequence) + SHA-256 of its bytes
constexpr char kAuditRecordTag = 'r';
constexpr char kAuditPersonTag = 'p';
constexpr char kAuditHeadKey[] = "h";
constexpr size_t kAuditRecordKeyLength = 1 + keys::kPositionLength;
constexpr size_t kSha256Length = 32;
constexpr uint64_t kAuditProgressEvery = 10000;

std::string AuditRecordKey(uint64_t sequence) {
  std::string k(1, kAuditRecordTag);
  keys::AppendPosition(sequence, &k);
  return k;
}

std::string AuditPersonKey(std::string_view nhs_number, uint64_t sequence) {
  std::string k(1, kAuditPersonTag);
  k.append(nhs_number);
  keys::AppendPosition(sequence, &k);
  return k;
}

std::string Sha256(std::string_view bytes) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), md, &len, EVP_sha256(), nullptr) != 1 ||
      len != kSha256Length) {
    return std::string();  // never with a working libcrypto; callers treat it as an error
  }
  return std::string(reinterpret_cast<const char*>(md), len);
}

// The record's stored bytes: deterministic serialization, so the same record
// always hashes the same.
bool SerializeAuditRecord(const icr::v1::AuditRecord& record, std::string* out) {
  out->clear();
  google::protobuf::io::StringOutputStream stream(out);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.SetSerializationDeterministic(true);
  return record.SerializeToCodedStream(&coded) && !coded.HadError();
}

// Metadata in the default column family.
constexpr char kSchemaVersionKey[] = "schema_version";
// 2: adds the `state` column family (derived workflow state).
constexpr char kSchemaVersion[] = "2";

constexpr auto kRelaxedSyncInterval = std::chrono::milliseconds(100);
// After a failed write, how often the writer tries to resume.
constexpr auto kResumeInterval = std::chrono::milliseconds(200);

// The one place where a rocksdb::Status becomes a Status. `what` says what the
// store was doing ("writing 12 events"), `path` which data directory.
Status FromRocks(const rocksdb::Status& s, std::string_view what, const std::string& path) {
  if (s.ok()) return Status::Ok();
  const std::string detail = s.ToString();
  const std::string where = std::string(what) + " in " + path + " failed: " + detail;
  if (s.IsIOError() && detail.find("/LOCK") != std::string::npos) {
    if (detail.find("lock hold by current process") != std::string::npos) {
      return Status::Unavailable("data directory " + path +
                                 " is already open in this process (RocksDB LOCK held): " + detail);
    }
    if (detail.find("While lock file") != std::string::npos) {
      return Status::Unavailable("data directory " + path +
                                 " is in use by another icr-broker process (RocksDB LOCK "
                                 "held): " +
                                 detail);
    }
  }
  if (s.IsNoSpace()) {
    return Status::ResourceExhausted(where + " (the disk holding " + path + " is full)");
  }
  if (s.IsMemoryLimit()) return Status::ResourceExhausted(where);
  if (s.IsNotFound()) return Status::NotFound(where);
  if (s.IsCorruption()) {
    return Status::Corruption(where + " (stored data failed a checksum or is malformed)");
  }
  if (s.IsIOError() || s.IsBusy() || s.IsTimedOut() || s.IsTryAgain() || s.IsIncomplete()) {
    return Status::Unavailable(where);
  }
  if (s.IsShutdownInProgress() || s.IsAborted()) return Status::Aborted(where);
  if (s.IsInvalidArgument() || s.IsNotSupported()) {
    // The store passes RocksDB only keys and options it builds itself, so
    // these mean the directory's contents do not fit this build.
    return Status::FailedPrecondition(where);
  }
  return Status::Internal(where);
}

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}


// A random (version 4) UUID: 8-4-4-4-12 lowercase hex.
std::string NewUuidV4(std::mt19937_64* rng) {
  uint64_t hi = (*rng)();
  uint64_t lo = (*rng)();
  hi = (hi & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;  // version 4
  lo = (lo & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;  // variant 10
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s(36, '-');
  size_t out = 0;
  auto put = [&](uint64_t v, int nibbles) {
    for (int i = nibbles - 1; i >= 0; --i) s[out++] = kHex[(v >> (4 * i)) & 0xf];
  };
  put(hi >> 32, 8);
  ++out;
  put(hi >> 16, 4);
  ++out;
  put(hi, 4);
  ++out;
  put(lo >> 48, 4);
  ++out;
  put(lo, 12);
  return s;
}

uint64_t RandomSeed() {
  try {
    std::random_device rd;
    return (static_cast<uint64_t>(rd()) << 32) ^ rd();
  } catch (...) {
    // No entropy source: fall back to the clock and the thread id.
    return static_cast<uint64_t>(NowMicros()) ^
           (std::hash<std::thread::id>()(std::this_thread::get_id()) << 1);
  }
}

// Runs a user callback; an exception from it must not kill the writer thread.
template <typename F, typename... Args>
void InvokeNoThrow(const char* what, F& f, Args&&... args) {
  try {
    f(std::forward<Args>(args)...);
  } catch (...) {
    std::fprintf(stderr, "icr store: %s threw an exception; ignored\n", what);
  }
}

rocksdb::ColumnFamilyOptions MakeCfOptions(const std::shared_ptr<rocksdb::Cache>& cache,
                                           rocksdb::CompressionType compression,
                                           size_t write_buffer_size, bool bloom,
                                           bool whole_key_filtering) {
  rocksdb::ColumnFamilyOptions o;
  o.compaction_style = rocksdb::kCompactionStyleLevel;
  o.level_compaction_dynamic_level_bytes = true;
  o.write_buffer_size = write_buffer_size;
  o.compression = compression;
  rocksdb::BlockBasedTableOptions t;
  t.block_cache = cache;
  t.format_version = 5;
  t.cache_index_and_filter_blocks = true;
  t.pin_l0_filter_and_index_blocks_in_cache = true;
  if (bloom) t.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  t.whole_key_filtering = whole_key_filtering;
  o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(t));
  return o;
}

// Lets RocksDB fold accumulated state keys with the StateMachine's rules.
class StateMergeOperator final : public rocksdb::MergeOperator {
 public:
  explicit StateMergeOperator(std::shared_ptr<StateMachine> machine)
      : machine_(std::move(machine)) {}

  bool FullMergeV2(const MergeOperationInput& in, MergeOperationOutput* out) const override {
    std::string existing;
    if (in.existing_value != nullptr) existing.assign(in.existing_value->data(), in.existing_value->size());
    std::vector<std::string_view> operands;
    operands.reserve(in.operand_list.size());
    for (const rocksdb::Slice& op : in.operand_list) operands.emplace_back(op.data(), op.size());
    return machine_->Fold(std::string_view(in.key.data(), in.key.size()),
                          in.existing_value != nullptr ? &existing : nullptr, operands,
                          &out->new_value);
  }
  const char* Name() const override { return "icr.StateMergeOperator"; }

 private:
  std::shared_ptr<StateMachine> machine_;
};

// The writer thread's view of the state column family while it builds one
// group: an overlay of the group's writes over the database, with an undo
// log so that one call's writes can be rolled back with its save point.
class GroupStateTxn final : public StateTxn {
 public:
  GroupStateTxn(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf, rocksdb::WriteBatch* batch,
                const StateMachine* machine)
      : db_(db), cf_(cf), batch_(batch), machine_(machine) {}

  Status Get(std::string_view key, std::string* value) override {
    std::string k(key);
    auto it = overlay_.find(k);
    std::string base;
    bool have_base = false;
    const std::vector<std::string>* operands = nullptr;
    if (it != overlay_.end() && it->second.base_known) {
      if (it->second.base.has_value()) {
        base = *it->second.base;
        have_base = true;
      }
    } else {
      rocksdb::Status rs = db_->Get(rocksdb::ReadOptions(), cf_, k, &base);
      if (rs.ok()) {
        have_base = true;
      } else if (!rs.IsNotFound()) {
        return Status::Unavailable("reading state key for the writer: " + rs.ToString());
      }
    }
    if (it != overlay_.end()) operands = &it->second.operands;
    if (operands == nullptr || operands->empty()) {
      if (!have_base) return Status::NotFound("");
      *value = std::move(base);
      return Status::Ok();
    }
    std::vector<std::string_view> ops(operands->begin(), operands->end());
    if (!machine_->Fold(key, have_base ? &base : nullptr, ops, value)) {
      return Status::Corruption("state key could not be folded");
    }
    return Status::Ok();
  }

  void Put(std::string_view key, std::string_view value) override {
    Entry& e = Touch(key, /*replace=*/true);
    e.base_known = true;
    e.base = std::string(value);
    e.operands.clear();
    batch_->Put(cf_, rocksdb::Slice(key.data(), key.size()),
                rocksdb::Slice(value.data(), value.size()));
  }

  void Delete(std::string_view key) override {
    Entry& e = Touch(key, /*replace=*/true);
    e.base_known = true;
    e.base.reset();
    e.operands.clear();
    batch_->Delete(cf_, rocksdb::Slice(key.data(), key.size()));
  }

  void Accumulate(std::string_view key, std::string_view operand) override {
    Entry& e = Touch(key, /*replace=*/false);
    e.operands.emplace_back(operand);
    batch_->Merge(cf_, rocksdb::Slice(key.data(), key.size()),
                  rocksdb::Slice(operand.data(), operand.size()));
  }

  // Call boundaries (the batch's own save points are handled by the caller).
  void BeginCall() { undo_.clear(); }
  void RollbackCall() {
    for (auto it = undo_.rbegin(); it != undo_.rend(); ++it) {
      switch (it->action) {
        case Undo::kErase:
          overlay_.erase(it->key);
          break;
        case Undo::kPopOperand:
          overlay_[it->key].operands.pop_back();
          break;
        case Undo::kRestore:
          overlay_[it->key] = std::move(*it->previous);
          break;
      }
    }
    undo_.clear();
  }

 private:
  struct Entry {
    bool base_known = false;             // false: the database holds the base
    std::optional<std::string> base;     // when known: the value, or none (deleted)
    std::vector<std::string> operands;   // accumulated after the base
  };
  // How to take back one change. An accumulation only pops its operand, so a
  // person with many events in one group costs no copies of earlier ones.
  struct Undo {
    enum Action { kErase, kPopOperand, kRestore } action;
    std::string key;
    std::optional<Entry> previous;  // kRestore
  };

  // The entry for `key`, recording how to undo the coming change: `replace`
  // for Put/Delete (which overwrite the entry), else an accumulation.
  Entry& Touch(std::string_view key, bool replace) {
    std::string k(key);
    auto it = overlay_.find(k);
    if (it == overlay_.end()) {
      undo_.push_back({Undo::kErase, k, std::nullopt});
      return overlay_[k];
    }
    if (replace) {
      undo_.push_back({Undo::kRestore, k, it->second});
    } else {
      undo_.push_back({Undo::kPopOperand, k, std::nullopt});
    }
    return it->second;
  }

  rocksdb::DB* db_;
  rocksdb::ColumnFamilyHandle* cf_;
  rocksdb::WriteBatch* batch_;
  const StateMachine* machine_;
  std::unordered_map<std::string, Entry> overlay_;
  std::vector<Undo> undo_;
};

class RocksDbStore final : public EventStore {
 public:
  explicit RocksDbStore(StoreOptions options) : options_(std::move(options)) {}
  ~RocksDbStore() override { Close(); }

  RocksDbStore(const RocksDbStore&) = delete;
  RocksDbStore& operator=(const RocksDbStore&) = delete;

  // Opens the database, checks the schema, recovers the last position and
  // starts the writer thread. Called once, before the store is shared.
  Status Open();

  void AppendAsync(std::vector<CareEvent> events, AppendCallback done) override {
    AppendOrdered(std::move(events), 0, std::move(done));
  }
  void AppendOrdered(std::vector<CareEvent> events, uint64_t origin,
                     AppendCallback done) override;
  void SetCommitListener(CommitListener listener) override { listener_ = std::move(listener); }
  uint64_t LastPosition() const override { return last_position_.load(std::memory_order_acquire); }
  Status ReadFrom(uint64_t from, size_t max, std::vector<EventPtr>* out) override;
  Status Get(uint64_t position, EventPtr* out) override;
  Status ReadPatient(const std::string& nhs_number, uint64_t after, size_t max,
                     std::vector<EventPtr>* out) override;
  Status ReadUrgent(uint64_t from, size_t max,
                    std::vector<std::pair<uint64_t, std::string>>* out) override;
  Status FindPositionAtTime(int64_t micros, uint64_t* position) override;
  Status PutSubscription(const std::string& name, const std::string& value, bool sync) override;
  Status GetSubscription(const std::string& name, std::string* value) override;
  Status DeleteSubscription(const std::string& name) override;
  Status ListSubscriptions(std::vector<std::pair<std::string, std::string>>* name_values) override;
  Status PutParked(const std::string& name, uint64_t position, const std::string& value,
                   const std::string& subscription_value) override;
  Status DeleteParked(const std::string& name, uint64_t position) override;
  Status ListParked(const std::string& name, size_t max,
                    std::vector<std::pair<uint64_t, std::string>>* out) override;
  Status GetState(const std::string& key, std::string* value) override;
  Status ScanState(const std::string& prefix,
                   const std::function<bool(std::string_view, std::string_view)>& visit) override;
  Status PutState(const std::string& key, const std::string& value) override;
  Status AppendAudit(std::vector<icr::v1::AuditRecord>* records) override;
  Status ReadAudit(uint64_t from, size_t max, std::vector<icr::v1::AuditRecord>* out) override;
  Status VerifyAudit(const std::function<void(uint64_t, uint64_t)>& progress,
                     AuditVerifyResult* result) override;
  Status AuditForPerson(const std::string& nhs_number, uint64_t after, size_t max,
                        std::vector<icr::v1::AuditRecord>* out) override;
  Status ReplaceWithStub(uint64_t position, const CareEvent& stub) override;
  StoreStats Stats() const override;
  // REQUIRES: not called from a `done` callback or the commit listener (the
  // writer thread); from there it only stops accepting appends.
  void Close() override;

 private:
  struct PendingCall {
    std::vector<CareEvent> events;
    AppendCallback done;
    uint64_t origin = 0;
  };
  // queued_people_'s key: a person's events queued from one origin.
  static std::string OriginKey(uint64_t origin, const std::string& nhs_number) {
    return std::to_string(origin) + "/" + nhs_number;
  }
  static bool AllBulk(const std::vector<PendingCall>& group) {
    for (const PendingCall& call : group) {
      for (const CareEvent& e : call.events) {
        if (e.priority() != icr::v1::BULK) return false;
      }
    }
    return true;
  }
  static bool CarriesUrgent(const std::vector<CareEvent>& events) {
    for (const CareEvent& e : events) {
      if (e.priority() == icr::v1::URGENT) return true;
    }
    return false;
  }

  Status OpenDb();
  Status CheckSchema();
  Status RecoverLastPosition();
  // Lets the state machine rebuild its memory from the stored state.
  Status RecoverStateMachine();
  // Reads the audit trail's head (sequence and hash of the last record).
  Status RecoverAuditHead();
  Status RecoverAuditHeadLocked();  // REQUIRES audit_mu_ held
  Status OpenAuditDb();
  // After a failed write: closes the audit database (its WAL is in error)
  // and opens it again, recovering what was stored. REQUIRES audit_mu_.
  Status ReopenAuditDbLocked();
  // Writes an audit batch; REQUIRES audit_mu_ held.
  Status AuditWrite(const rocksdb::WriteOptions& wo, rocksdb::WriteBatch* batch,
                    std::string_view what);
  void AuditSyncLoop();
  // Takes db_mu_ and audit_db_mu_ shared for a read of the audit trail; not
  // OK when the store is closed or the audit database is being reopened.
  Status LockAuditForRead(std::shared_lock<std::shared_mutex>* db,
                          std::shared_lock<std::shared_mutex>* audit);

  void WriterLoop();
  void CommitGroup(std::vector<PendingCall>* group, std::mt19937_64* rng);
  // Writer thread: records why writes are refused (OK: they are not).
  void SetWriteError(Status s);
  // Writer thread, with write_error_ set: tries to resume writing (see the
  // failure policy above). True if the store takes writes again.
  bool TryResume();
  // Cuts a group without urgent calls short when an urgent call is waiting:
  // the group's calls from `from` on go back to the front of the queue (none
  // of them has been written) and the group is closed early. Not when one of
  // them shares an origin with a waiting urgent call (that call may have
  // jumped the queue only because these were already taken: its stream's
  // order must hold). True if the group was cut.
  bool ReturnToQueue(std::vector<PendingCall>* group, size_t from);
  // The stored original of an idempotency key; kNotFound if there is none.
  // Turns an idempotency-CF lookup (status and value) into the original
  // event's result; kNotFound when there was no record.
  Status ResolveStored(const rocksdb::Status& rs, const rocksdb::Slice& value,
                       AppendResult* result);

  // REQUIRES: db_ open and in use (db_mu_ held shared, or the writer thread).
  Status ReadEvent(uint64_t position, EventPtr* out);
  Status ParseEvent(uint64_t position, const rocksdb::Slice& value, EventPtr* out) const;
  // Visits the keys of a position-keyed column family from `from` up to the
  // last committed position (returned in *last_out) in order, until `visit`
  // returns false or sets an error.
  Status ScanPositions(
      size_t cf, uint64_t from, std::string_view what,
      const std::function<bool(uint64_t position, const rocksdb::Slice& value, Status* s)>& visit,
      uint64_t* last_out = nullptr);
  // After an open failed with corruption: true if the WAL is the damaged
  // part (a read-only open stopping at the damage works), with the last
  // position intact before it. Changes nothing on disk.
  bool WalDamageLeaves(const rocksdb::DBOptions& db_options,
                       const std::vector<rocksdb::ColumnFamilyDescriptor>& cfs,
                       uint64_t* intact);
  // A write from outside the writer thread (audit records, stubs,
  // subscriptions, parked events, state keys). A failed one may have left
  // RocksDB's WAL in error (a full or failing disk): the writer is told, so
  // it refuses publishes, never syncs that WAL and tries to resume, as after
  // a failed group (the failure policy above).
  Status SideWrite(const rocksdb::WriteOptions& wo, rocksdb::WriteBatch* batch,
                   std::string_view what);
  Status Rocks(const rocksdb::Status& s, std::string_view what) const {
    return FromRocks(s, what, options_.data_dir);
  }
  static Status Closed() { return Status::Aborted("the event store is closed"); }

  const StoreOptions options_;

  // Lifetime of db_ and cfs_: shared by every user, exclusive in Close().
  mutable std::shared_mutex db_mu_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> cfs_;
  std::shared_ptr<rocksdb::Cache> cache_;

  // The append queue.
  std::mutex mu_;
  std::condition_variable cv_;
  // Urgent lane: calls carrying an URGENT event are written before the
  // routine and bulk calls queued ahead of them, unless one of those came
  // from the same origin (client stream) and is about the same person, so
  // each stream's per-person order is kept: queued_people_ counts the events
  // of queue_ per origin and NHS number (calls of origin 0 are independent
  // and not counted).
  std::deque<PendingCall> urgent_queue_;
  std::deque<PendingCall> queue_;
  std::unordered_map<std::string, uint32_t> queued_people_;
  size_t queued_events_ = 0;
  // urgent_queue_ is not empty (read by the writer between the calls of a
  // group without taking mu_).
  std::atomic<bool> urgent_waiting_{false};
  bool accepting_ = false;
  bool stop_ = false;

  std::thread writer_;
  std::thread::id writer_id_;
  std::mutex close_mu_;
  bool closed_ = false;

  std::atomic<uint64_t> last_position_{0};
  CommitListener listener_;

  // Writer thread only (and Open before the writer starts).
  int64_t last_recorded_micros_ = 0;
  Status write_error_;
  bool resume_impossible_ = false;
  std::chrono::steady_clock::time_point last_resume_attempt_{};
  // A copy of write_error_'s message for Stats() (any thread).
  mutable std::mutex error_mu_;
  std::string write_error_text_;
  bool write_error_permanent_ = false;

  // A write outside the writer thread failed (SideWrite): side_error_ (under
  // mu_) is for the writer to adopt as its write_error_; side_write_failed_
  // stays set until writing resumes, so the WAL is not synced before then
  // (RocksDB asserts on syncing a WAL that failed).
  Status side_error_;
  bool side_error_pending_ = false;
  std::atomic<bool> side_write_failed_{false};
  // Held shared by side writes, exclusively by WAL syncs outside the writer's
  // own writes (relaxed durability, Close), so a sync never races a side
  // write that fails.
  std::shared_mutex wal_mu_;

  // The audit trail's head: the chain is a total order, so appends are
  // serialized by audit_mu_, which guards both.
  std::mutex audit_mu_;
  uint64_t audit_last_sequence_ = 0;
  std::string audit_head_hash_ = std::string(kSha256Length, '\0');
  // The audit trail's own database (<data_dir>/audit); its lifetime is
  // db_'s (db_mu_). audit_dirty_: written since the last sync;
  // audit_write_failed_: its WAL is in error until a write succeeds again
  // (never synced meanwhile). Both under audit_mu_.
  std::unique_ptr<rocksdb::DB> audit_db_;
  // Readers hold it shared; reopening after a failed write, exclusively.
  std::shared_mutex audit_db_mu_;
  bool audit_dirty_ = false;
  bool audit_write_failed_ = false;
  Status audit_failure_;  // why the last write failed
  std::chrono::steady_clock::time_point audit_last_reopen_{};
  std::thread audit_syncer_;
  std::condition_variable audit_cv_;
  bool audit_stop_ = false;

  std::atomic<uint64_t> appended_events_{0};
  std::atomic<uint64_t> duplicate_events_{0};
  std::atomic<uint64_t> write_batches_{0};
  std::atomic<uint64_t> groups_cut_{0};
  std::atomic<uint64_t> write_recoveries_{0};
};

// ---------------------------------------------------------------------------
// Open and close
// ---------------------------------------------------------------------------

Status RocksDbStore::Open() {
  if (options_.data_dir.empty()) {
    return Status::InvalidArgument("StoreOptions.data_dir is empty");
  }
  if (!(options_.bulk_share > 0.0 && options_.bulk_share <= 1.0)) {
    return Status::InvalidArgument("StoreOptions.bulk_share must be in (0, 1]");
  }
  if (options_.max_batch_events == 0 || options_.max_routine_batch_events == 0) {
    return Status::InvalidArgument(
        "StoreOptions.max_batch_events and max_routine_batch_events must be at least 1");
  }
  if (options_.max_queued_events == 0) {
    return Status::InvalidArgument("StoreOptions.max_queued_events must be at least 1");
  }
  Status s = OpenDb();
  if (!s.ok()) return s;
  s = CheckSchema();
  if (!s.ok()) return s;
  s = RecoverLastPosition();
  if (!s.ok()) return s;
  s = RecoverStateMachine();
  if (!s.ok()) return s;
  s = OpenAuditDb();
  if (!s.ok()) return s;
  s = RecoverAuditHead();
  if (!s.ok()) return s;
  {
    std::lock_guard lk(mu_);
    accepting_ = true;
  }
  try {
    writer_ = std::thread([this] { WriterLoop(); });
  } catch (const std::exception& e) {
    return Status::Internal(std::string("cannot start the store writer thread: ") + e.what());
  }
  writer_id_ = writer_.get_id();
  try {
    audit_syncer_ = std::thread([this] { AuditSyncLoop(); });
  } catch (const std::exception& e) {
    return Status::Internal(std::string("cannot start the audit sync thread: ") + e.what());
  }
  return Status::Ok();
}

Status RocksDbStore::OpenDb() {
  namespace fs = std::filesystem;
  const std::string& dir = options_.data_dir;
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (fs::exists(st) && !fs::is_directory(st)) {
    return Status::FailedPrecondition("data directory " + dir + " exists but is not a directory");
  }
  fs::create_directories(dir, ec);
  if (ec) {
    return Status::Unavailable("cannot create data directory " + dir + ": " + ec.message());
  }
  if (!fs::is_directory(dir, ec)) {
    return Status::FailedPrecondition("data directory " + dir + " is not a directory");
  }

  cache_ = rocksdb::NewLRUCache(options_.block_cache_bytes);
  rocksdb::CompressionType compression = rocksdb::kNoCompression;
  for (rocksdb::CompressionType c : rocksdb::GetSupportedCompressions()) {
    if (c == rocksdb::kLZ4Compression) compression = rocksdb::kLZ4Compression;
  }

  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.max_background_jobs = 2;
  db_options.bytes_per_sync = 1 << 20;
  db_options.max_total_wal_size = 512u << 20;
  db_options.keep_log_file_num = 5;
  // Sync durability: every acknowledged write was synced before the next
  // group was written, so a crash can only tear a log's last record; that is
  // tolerated, and a record failing its checksum with more after it is
  // damage, refused below unless accepted. Relaxed durability: an older log
  // may lose an unsynced tail while a later one keeps its writes, and
  // tolerating that would leave holes; point-in-time recovery keeps a prefix
  // (and cannot tell damage from a lost tail).
  db_options.wal_recovery_mode = options_.durability == Durability::kSync
                                     ? rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords
                                     : rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  if (options_.env != nullptr) db_options.env = options_.env;
  // One thread writes events; pipelining across writer groups does not help
  // it (measured: no gain for the single writer).
  db_options.enable_pipelined_write = false;

  constexpr size_t kMiB = 1u << 20;
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  descriptors.emplace_back(kCfNames[kDefault],
                           MakeCfOptions(cache_, compression, 4 * kMiB, false, true));
  descriptors.emplace_back(kCfNames[kEvents],
                           MakeCfOptions(cache_, compression, 64 * kMiB, false, true));
  {
    rocksdb::ColumnFamilyOptions patient =
        MakeCfOptions(cache_, compression, 32 * kMiB, /*bloom=*/true,
                      /*whole_key_filtering=*/false);
    patient.prefix_extractor.reset(rocksdb::NewFixedPrefixTransform(keys::kNhsNumberLength));
    patient.memtable_prefix_bloom_size_ratio = 0.05;
    descriptors.emplace_back(kCfNames[kPatient], patient);
  }
  {
    // Every new event's idempotency key is looked up and almost never found.
    rocksdb::ColumnFamilyOptions idempotency =
        MakeCfOptions(cache_, compression, 32 * kMiB, true, true);
    idempotency.memtable_prefix_bloom_size_ratio = 0.05;
    idempotency.memtable_whole_key_filtering = true;
    descriptors.emplace_back(kCfNames[kIdempotency], idempotency);
  }
  descriptors.emplace_back(kCfNames[kCursors],
                           MakeCfOptions(cache_, compression, 4 * kMiB, false, true));
  descriptors.emplace_back(kCfNames[kParked],
                           MakeCfOptions(cache_, compression, 4 * kMiB, false, true));
  {
    rocksdb::ColumnFamilyOptions state =
        MakeCfOptions(cache_, compression, 32 * kMiB, /*bloom=*/true, true);
    // The writer looks state keys up for every event, mostly keys that do
    // not exist yet (a new referral, a number never merged): a memtable
    // bloom answers those without searching the skip list.
    state.memtable_prefix_bloom_size_ratio = 0.05;
    state.memtable_whole_key_filtering = true;
    if (options_.state_machine) {
      state.merge_operator = std::make_shared<StateMergeOperator>(options_.state_machine);
    }
    descriptors.emplace_back(kCfNames[kState], state);
  }
  // Urgent lane index: position -> NHS number of every URGENT event. Added
  // after schema version 2 without a version change: an older directory
  // gets it empty (its older events are simply not indexed).
  descriptors.emplace_back(kCfNames[kLanes],
                           MakeCfOptions(cache_, compression, 4 * kMiB, false, true));

  rocksdb::DB* raw = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::Status rs = rocksdb::DB::Open(db_options, dir, descriptors, &handles, &raw);
  if (rs.IsCorruption()) {
    // Is it the WAL? Then a read-only open that stops at the damage (and
    // changes nothing on disk) works, and says how far the log is intact.
    uint64_t intact = 0;
    if (!WalDamageLeaves(db_options, descriptors, &intact)) {
      return Status::Corruption(
          "the event store in " + dir + " is damaged and cannot be opened as it is (" +
          rs.ToString() +
          "): the damage is in a table file or the MANIFEST, or in a write-ahead log whose "
          "later writes are already in table files. Restore the directory from a backup");
    }
    const std::string kept =
        intact == 0 ? std::string("nothing") : "positions 1-" + std::to_string(intact);
    if (!options_.accept_wal_damage) {
      return Status::Corruption(
          "the write-ahead log in " + dir + " is damaged before its end (" + rs.ToString() +
          "): it is intact up to position " + std::to_string(intact) +
          ", and acknowledged events written after the damage would be lost by recovering "
          "past it, so the store refuses to open. Restore the directory from a backup; or "
          "copy it aside and restart with --accept-wal-damage to keep " + kept +
          " and lose what follows");
    }
    db_options.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
    rs = rocksdb::DB::Open(db_options, dir, descriptors, &handles, &raw);
    if (rs.ok()) {
      std::fprintf(stderr,
                   "icr store: ALERT: the write-ahead log in %s was damaged; opened with "
                   "--accept-wal-damage: kept %s, dropped every record after the damage "
                   "(icr-broker moves subscriptions' cursors past %llu back to it at "
                   "start-up)\n",
                   dir.c_str(), kept.c_str(), static_cast<unsigned long long>(intact));
    }
  }
  if (!rs.ok()) return Rocks(rs, "opening the event store");
  std::unique_lock lk(db_mu_);
  db_.reset(raw);
  cfs_ = std::move(handles);
  return Status::Ok();
}

bool RocksDbStore::WalDamageLeaves(const rocksdb::DBOptions& db_options,
                                   const std::vector<rocksdb::ColumnFamilyDescriptor>& cfs,
                                   uint64_t* intact) {
  rocksdb::DBOptions probe = db_options;
  probe.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  probe.create_if_missing = false;
  // Only the column families the directory has (an older one may lack some).
  std::vector<std::string> names;
  if (!rocksdb::DB::ListColumnFamilies(probe, options_.data_dir, &names).ok()) return false;
  std::vector<rocksdb::ColumnFamilyDescriptor> present;
  for (const auto& d : cfs) {
    if (std::find(names.begin(), names.end(), d.name) != names.end()) present.push_back(d);
  }
  const auto events = std::find_if(present.begin(), present.end(), [](const auto& d) {
    return d.name == kCfNames[kEvents];
  });
  if (events == present.end()) return false;
  rocksdb::DB* raw = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  if (!rocksdb::DB::OpenForReadOnly(probe, options_.data_dir, present, &handles, &raw).ok()) {
    return false;
  }
  std::unique_ptr<rocksdb::DB> db(raw);
  bool ok = true;
  *intact = 0;
  {
    std::unique_ptr<rocksdb::Iterator> it(
        db->NewIterator(rocksdb::ReadOptions(), handles[events - present.begin()]));
    it->SeekToLast();
    if (!it->status().ok()) {
      ok = false;
    } else if (it->Valid() && !keys::DecodePosition(std::string_view(it->key().data(),
                                                                     it->key().size()),
                                                    intact)) {
      ok = false;
    }
  }
  for (rocksdb::ColumnFamilyHandle* h : handles) db->DestroyColumnFamilyHandle(h);
  return ok;
}

Status RocksDbStore::CheckSchema() {
  std::string version;
  rocksdb::Status rs =
      db_->Get(rocksdb::ReadOptions(), cfs_[kDefault], kSchemaVersionKey, &version);
  if (rs.ok()) {
    if (version == kSchemaVersion) return Status::Ok();
    return Status::FailedPrecondition(
        "data directory " + options_.data_dir + " has store schema version '" + version +
        "' but this icr-broker understands only version " + kSchemaVersion +
        (version == "1" ? "; version 1 stores have no derived workflow state: move the "
                          "directory aside (or use a new --data-dir) and re-import"
                        : "; refusing to open (run a broker that knows this version)"));
  }
  if (!rs.IsNotFound()) return Rocks(rs, "reading the store schema version");
  // No version: only a brand-new (empty) database may be stamped.
  for (size_t cf = kEvents; cf < kNumCfs; ++cf) {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cfs_[cf]));
    it->SeekToFirst();
    if (!it->status().ok()) return Rocks(it->status(), "checking that the store is empty");
    if (it->Valid()) {
      return Status::FailedPrecondition(
          "data directory " + options_.data_dir +
          " holds data but no store schema version; refusing to open it as an icr-broker "
          "store");
    }
  }
  rocksdb::WriteOptions wo;
  wo.sync = true;
  return Rocks(db_->Put(wo, cfs_[kDefault], kSchemaVersionKey, kSchemaVersion),
               "writing the store schema version");
}

Status RocksDbStore::RecoverLastPosition() {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cfs_[kEvents]));
  it->SeekToLast();
  if (!it->status().ok()) return Rocks(it->status(), "finding the last event");
  if (!it->Valid()) return Status::Ok();  // empty log
  uint64_t position = 0;
  if (!keys::DecodePosition(std::string_view(it->key().data(), it->key().size()), &position)) {
    return Status::Corruption("the last key of the events column family in " + options_.data_dir +
                              " is not an 8-byte position");
  }
  EventPtr last;
  Status s = ParseEvent(position, it->value(), &last);
  if (!s.ok()) return s;
  last_position_.store(position, std::memory_order_release);
  last_recorded_micros_ = ToMicros(last->event.recorded_at());
  return Status::Ok();
}

void RocksDbStore::Close() {
  if (writer_.joinable() && std::this_thread::get_id() == writer_id_) {
    // On the writer thread (from a callback): cannot join ourselves.
    std::lock_guard lk(mu_);
    accepting_ = false;
    return;
  }
  std::lock_guard close_lk(close_mu_);
  if (closed_) return;
  closed_ = true;
  {
    std::lock_guard lk(mu_);
    accepting_ = false;
    stop_ = true;
  }
  cv_.notify_all();
  if (writer_.joinable()) writer_.join();  // drains and writes what is queued
  {
    std::lock_guard audit_lk(audit_mu_);
    audit_stop_ = true;
  }
  audit_cv_.notify_all();
  if (audit_syncer_.joinable()) audit_syncer_.join();

  std::unique_lock db_lk(db_mu_);
  if (!db_) return;
  std::unique_lock audit_db_lk(audit_db_mu_);
  if (audit_db_) {
    // As for the event log: a WAL that failed is not synced again.
    rocksdb::Status as = audit_write_failed_ ? rocksdb::Status::OK()
                                             : audit_db_->FlushWAL(/*sync=*/true);
    if (!as.ok()) {
      std::fprintf(stderr, "icr store: %s\n",
                   Rocks(as, "syncing the audit trail on close").ToString().c_str());
    }
    as = audit_db_->Close();
    if (!as.ok()) {
      std::fprintf(stderr, "icr store: %s\n",
                   Rocks(as, "closing the audit trail").ToString().c_str());
    }
    audit_db_.reset();
  }
  // After a failed write the WAL file is in error: syncing it again would
  // trip RocksDB's own checks. (In sync durability nothing unsynced was
  // acknowledged; in relaxed durability up to ~100 ms may be, as always.)
  // Side writes cannot run now (they hold db_mu_ shared).
  rocksdb::Status rs = write_error_.ok() && !side_write_failed_.load()
                           ? db_->FlushWAL(/*sync=*/true)
                           : rocksdb::Status::OK();
  if (!rs.ok()) {
    std::fprintf(stderr, "icr store: %s\n",
                 Rocks(rs, "syncing the WAL on close").ToString().c_str());
  }
  for (rocksdb::ColumnFamilyHandle* h : cfs_) db_->DestroyColumnFamilyHandle(h);
  cfs_.clear();
  rs = db_->Close();
  if (!rs.ok()) {
    std::fprintf(stderr, "icr store: %s\n", Rocks(rs, "closing the store").ToString().c_str());
  }
  db_.reset();
}

// ---------------------------------------------------------------------------
// Write path
// ---------------------------------------------------------------------------

void RocksDbStore::AppendOrdered(std::vector<CareEvent> events, uint64_t origin,
                                 AppendCallback done) {
  if (!done) done = [](const Status&, std::vector<AppendResult>) {};
  if (events.empty()) {
    InvokeNoThrow("an append callback", done, Status::Ok(), std::vector<AppendResult>());
    return;
  }
  // The only content the store relies on: the patient key is fixed-width.
  for (const CareEvent& e : events) {
    if (e.nhs_number().size() != keys::kNhsNumberLength) {
      InvokeNoThrow("an append callback", done,
                    Status::InvalidArgument("nhs_number must be 10 characters; nothing stored"),
                    std::vector<AppendResult>());
      return;
    }
  }
  const size_t n = events.size();
  const bool urgent = CarriesUrgent(events);
  // Urgent calls may use 10% more than the limit: a full queue of bulk
  // events must not refuse a discharge referral.
  const size_t limit =
      urgent ? options_.max_queued_events + options_.max_queued_events / 10
             : options_.max_queued_events;
  Status reject;
  {
    std::lock_guard lk(mu_);
    if (!accepting_) {
      reject = Status::Aborted("the event store is closing; nothing stored");
    } else if (queued_events_ + n > limit) {
      reject = Status::ResourceExhausted(
          "the event store's write queue is full (" + std::to_string(queued_events_) +
          " events waiting, limit " + std::to_string(limit) +
          "); nothing stored, retry later");
    } else {
      bool jump = urgent;
      for (size_t i = 0; jump && origin != 0 && i < events.size(); ++i) {
        jump = queued_people_.count(OriginKey(origin, events[i].nhs_number())) == 0;
      }
      if (jump) {
        urgent_queue_.push_back(PendingCall{std::move(events), std::move(done), origin});
        urgent_waiting_.store(true, std::memory_order_relaxed);
      } else {
        if (origin != 0) {
          for (const CareEvent& e : events) ++queued_people_[OriginKey(origin, e.nhs_number())];
        }
        queue_.push_back(PendingCall{std::move(events), std::move(done), origin});
      }
      queued_events_ += n;
    }
  }
  if (reject.ok()) {
    cv_.notify_one();
  } else {
    InvokeNoThrow("an append callback", done, reject, std::vector<AppendResult>());
  }
}

void RocksDbStore::WriterLoop() {
  std::mt19937_64 rng(RandomSeed());
  const bool relaxed = options_.durability == Durability::kRelaxed;
  bool unsynced = false;
  auto last_sync = std::chrono::steady_clock::now();
  for (;;) {
    std::vector<PendingCall> group;
    {
      std::unique_lock lk(mu_);
      auto ready = [this] {
        return stop_ || !queue_.empty() || !urgent_queue_.empty() || side_error_pending_;
      };
      const bool retrying = !write_error_.ok() && !resume_impossible_;
      if (retrying) {
        // Writes are refused: try to resume every kResumeInterval even with
        // nothing queued, so an idle broker recovers (and says so in
        // GetStatus) as soon as the disk takes writes again.
        if (!cv_.wait_until(lk, last_resume_attempt_ + kResumeInterval, ready)) {
          lk.unlock();
          TryResume();
          continue;
        }
      } else if (relaxed && unsynced) {
        cv_.wait_until(lk, last_sync + kRelaxedSyncInterval, ready);
      } else {
        cv_.wait(lk, ready);
      }
      if (side_error_pending_) {
        // A side write failed: refuse publishes and retry as after a failed
        // group (unless already doing so).
        side_error_pending_ = false;
        if (write_error_.ok()) SetWriteError(std::move(side_error_));
        side_error_ = Status::Ok();
      }
      if (queue_.empty() && urgent_queue_.empty() && stop_) break;
      size_t taken = 0;
      // Urgent calls make a group of their own: an urgent publish waits
      // neither for the routine and bulk calls queued before it nor for
      // ones added to its group. Other groups are capped smaller, so the
      // group in progress when an urgent call arrives ends soon.
      std::deque<PendingCall>* q = urgent_queue_.empty() ? &queue_ : &urgent_queue_;
      const size_t cap = q == &queue_ ? std::min(options_.max_batch_events,
                                                 options_.max_routine_batch_events)
                                      : options_.max_batch_events;
      while (!q->empty()) {
        const size_t k = q->front().events.size();
        if (!group.empty() && taken + k > cap) break;
        taken += k;
        if (q == &queue_ && q->front().origin != 0) {
          for (const CareEvent& e : q->front().events) {
            auto it = queued_people_.find(OriginKey(q->front().origin, e.nhs_number()));
            if (--it->second == 0) queued_people_.erase(it);
          }
        }
        group.push_back(std::move(q->front()));
        q->pop_front();
      }
      queued_events_ -= taken;
      if (urgent_queue_.empty()) urgent_waiting_.store(false, std::memory_order_relaxed);
    }
    if (!group.empty()) {
      const uint64_t before = write_batches_.load(std::memory_order_relaxed);
      const bool bulk = AllBulk(group);
      const auto started = std::chrono::steady_clock::now();
      CommitGroup(&group, &rng);
      if (write_batches_.load(std::memory_order_relaxed) != before) unsynced = true;
      if (bulk && options_.bulk_share < 1.0) {
        // Bulk share: after a group of BULK events, leave the machine to
        // everything else for a while (an urgent call ends the pause), so a
        // backfill at full speed cannot starve urgent traffic of CPU.
        const auto spent = std::chrono::steady_clock::now() - started;
        const auto pause = std::chrono::duration_cast<std::chrono::microseconds>(
            spent * ((1.0 - options_.bulk_share) / options_.bulk_share));
        std::unique_lock lk(mu_);
        cv_.wait_for(lk, std::min<std::chrono::microseconds>(pause, std::chrono::milliseconds(50)),
                     [this] { return stop_ || !urgent_queue_.empty(); });
      }
    }
    if (relaxed && unsynced && write_error_.ok() && !side_write_failed_.load() &&
        std::chrono::steady_clock::now() - last_sync >= kRelaxedSyncInterval) {
      std::unique_lock wal_lk(wal_mu_);
      // Checked again under wal_mu_: no side write can fail from here on.
      rocksdb::Status rs =
          side_write_failed_.load() ? rocksdb::Status::OK() : db_->SyncWAL();
      last_sync = std::chrono::steady_clock::now();
      unsynced = false;
      if (!rs.ok() && write_error_.ok()) {
        Status s = Rocks(rs, "syncing the WAL (relaxed durability)");
        SetWriteError(Status(s.code() == StatusCode::kResourceExhausted
                                 ? StatusCode::kResourceExhausted
                                 : StatusCode::kUnavailable,
                             s.message() + "; publishes are refused until the disk takes "
                                           "writes again (the store retries by itself)"));
      }
    }
  }
}

Status RocksDbStore::ResolveStored(const rocksdb::Status& rs, const rocksdb::Slice& value,
                                   AppendResult* result) {
  if (rs.IsNotFound()) return Status::NotFound("");
  if (!rs.ok()) return Rocks(rs, "looking up an idempotency key");
  uint64_t position = 0;
  if (!keys::DecodePosition(std::string_view(value.data(), value.size()), &position)) {
    return Status::Corruption("an idempotency record in " + options_.data_dir +
                              " does not hold an 8-byte position");
  }
  EventPtr original;
  Status s = ReadEvent(position, &original);
  if (s.code() == StatusCode::kNotFound) {
    return Status::Corruption("an idempotency record in " + options_.data_dir +
                              " points at position " + std::to_string(position) +
                              ", which holds no event");
  }
  if (!s.ok()) return s;
  result->position = position;
  result->event_id = original->event.event_id();
  result->recorded_at_micros = ToMicros(original->event.recorded_at());
  result->duplicate = true;
  return Status::Ok();
}

void RocksDbStore::CommitGroup(std::vector<PendingCall>* group, std::mt19937_64* rng) {
  if (!write_error_.ok() && !TryResume()) {
    for (PendingCall& call : *group) {
      InvokeNoThrow("an append callback", call.done, write_error_, std::vector<AppendResult>());
    }
    return;
  }
  rocksdb::WriteBatch batch;
  std::vector<std::vector<AppendResult>> results(group->size());
  std::vector<Status> call_status(group->size());
  std::vector<EventPtr> committed;                     // new events, position order
  std::unordered_map<std::string, size_t> batch_keys;  // idempotency key -> committed index
  uint64_t position = last_position_.load(std::memory_order_relaxed);
  const int64_t recorded = std::max(NowMicros(), last_recorded_micros_);
  size_t new_events = 0;
  size_t duplicates = 0;

  // One MultiGet for the idempotency keys of the whole group (a Get per
  // event was a measurable share of the writer thread).
  std::vector<std::string> idem_keys;
  for (const PendingCall& call : *group) {
    for (const CareEvent& event : call.events) {
      idem_keys.push_back(keys::IdempotencyKey(event.source_system_id(), event.source_message_id()));
    }
  }
  std::vector<rocksdb::Slice> idem_slices(idem_keys.begin(), idem_keys.end());
  std::vector<rocksdb::PinnableSlice> idem_values(idem_keys.size());
  std::vector<rocksdb::Status> idem_statuses(idem_keys.size());
  if (!idem_keys.empty()) {
    db_->MultiGet(rocksdb::ReadOptions(), cfs_[kIdempotency], idem_keys.size(),
                  idem_slices.data(), idem_values.data(), idem_statuses.data());
  }
  size_t k = 0;  // index into idem_* for the current event
  std::optional<GroupStateTxn> txn;
  if (options_.state_machine) {
    txn.emplace(db_.get(), cfs_[kState], &batch, options_.state_machine.get());
  }

  const bool urgent_group = std::any_of(group->begin(), group->end(), [](const PendingCall& call) {
    return CarriesUrgent(call.events);
  });
  for (size_t c = 0; c < group->size(); ++c) {
    // An urgent call waiting: close this group at the call boundary rather
    // than make it wait for the rest (a call itself is never split).
    if (c > 0 && !urgent_group && urgent_waiting_.load(std::memory_order_relaxed) &&
        ReturnToQueue(group, c)) {
      break;
    }
    PendingCall& call = (*group)[c];
    batch.SetSavePoint();
    if (txn) txn->BeginCall();
    const uint64_t call_start_position = position;
    const size_t call_start_committed = committed.size();
    std::vector<std::string> call_keys;
    size_t call_duplicates = 0;
    Status s;
    results[c].reserve(call.events.size());
    for (CareEvent& event : call.events) {
      const size_t ki = k++;
      std::string key = std::move(idem_keys[ki]);
      AppendResult r;
      auto it = batch_keys.find(key);
      if (it != batch_keys.end()) {
        const StoredEvent& original = *committed[it->second];
        r.position = original.position;
        r.event_id = original.event.event_id();
        r.recorded_at_micros = recorded;
        r.duplicate = true;
        results[c].push_back(std::move(r));
        ++call_duplicates;
        continue;
      }
      s = ResolveStored(idem_statuses[ki], idem_values[ki], &r);
      if (s.ok()) {
        results[c].push_back(std::move(r));
        ++call_duplicates;
        continue;
      }
      if (s.code() != StatusCode::kNotFound) break;
      s = Status::Ok();

      ++position;
      auto stored = std::make_shared<StoredEvent>();
      stored->position = position;
      stored->event = std::move(event);
      stored->event.set_position(position);
      stored->event.set_event_id(NewUuidV4(rng));
      SetTimestamp(stored->event.mutable_recorded_at(), recorded);
      if (txn) {
        s = options_.state_machine->Apply(&stored->event, &*txn);
        if (!s.ok()) {
          // Say which event of a batch was refused.
          if (call.events.size() > 1) {
            const size_t index = static_cast<size_t>(&event - call.events.data());
            s = Status(s.code(), "events[" + std::to_string(index) + "]: " + s.message());
          }
          break;
        }
      }
      if (!stored->event.SerializeToString(&stored->encoded)) {
        s = Status::Internal("event " + std::to_string(position) + " could not be serialized");
        break;
      }
      const std::string position_key = keys::EncodePosition(position);
      batch.Put(cfs_[kEvents], position_key, stored->encoded);
      if (stored->event.priority() == icr::v1::URGENT) {
        batch.Put(cfs_[kLanes], position_key, stored->event.nhs_number());
      }
      batch.Put(cfs_[kPatient], keys::PatientKey(stored->event.nhs_number(), position),
                rocksdb::Slice());
      batch.Put(cfs_[kIdempotency], key, position_key);

      r.position = position;
      r.event_id = stored->event.event_id();
      r.recorded_at_micros = recorded;
      r.duplicate = false;
      results[c].push_back(std::move(r));
      batch_keys.emplace(key, committed.size());
      call_keys.push_back(std::move(key));
      committed.push_back(std::move(stored));
    }
    if (s.ok()) {
      batch.PopSavePoint();
      duplicates += call_duplicates;
    } else {
      // This call alone fails; the others of the group go on.
      batch.RollbackToSavePoint();
      if (txn) txn->RollbackCall();
      position = call_start_position;
      committed.resize(call_start_committed);
      for (const std::string& k : call_keys) batch_keys.erase(k);
      results[c].clear();
      call_status[c] = s;
    }
  }
  new_events = committed.size();

  if (new_events > 0) {
    rocksdb::WriteOptions wo;
    wo.sync = options_.durability == Durability::kSync;
    rocksdb::Status rs = db_->Write(wo, &batch);
    if (!rs.ok()) {
      Status mapped = Rocks(rs, "writing a group of " + std::to_string(new_events) + " events");
      Status failure = mapped.code() == StatusCode::kResourceExhausted
                           ? Status::ResourceExhausted(mapped.message() + "; nothing stored")
                           : Status::Unavailable(mapped.message() + "; nothing stored");
      SetWriteError(Status(failure.code(),
                           mapped.message() +
                               "; publishes are refused until the disk takes writes again "
                               "(the store retries by itself); nothing stored"));
      for (size_t c = 0; c < group->size(); ++c) {
        InvokeNoThrow("an append callback", (*group)[c].done,
                      call_status[c].ok() ? failure : call_status[c], std::vector<AppendResult>());
      }
      return;  // positions roll back: last_position_ was not touched
    }
    last_recorded_micros_ = recorded;
    last_position_.store(position, std::memory_order_release);
    write_batches_.fetch_add(1, std::memory_order_relaxed);
  }
  appended_events_.fetch_add(new_events, std::memory_order_relaxed);
  duplicate_events_.fetch_add(duplicates, std::memory_order_relaxed);

  if (new_events > 0 && listener_) InvokeNoThrow("the commit listener", listener_, committed);
  for (size_t c = 0; c < group->size(); ++c) {
    InvokeNoThrow("an append callback", (*group)[c].done, call_status[c], std::move(results[c]));
  }
}

bool RocksDbStore::ReturnToQueue(std::vector<PendingCall>* group, size_t from) {
  std::lock_guard lk(mu_);
  for (const PendingCall& urgent : urgent_queue_) {
    if (urgent.origin == 0) continue;
    for (size_t c = from; c < group->size(); ++c) {
      if ((*group)[c].origin == urgent.origin) return false;
    }
  }
  for (size_t c = group->size(); c-- > from;) {
    PendingCall& call = (*group)[c];
    if (call.origin != 0) {
      for (const CareEvent& e : call.events) ++queued_people_[OriginKey(call.origin, e.nhs_number())];
    }
    queued_events_ += call.events.size();
    queue_.push_front(std::move(call));
  }
  group->resize(from);
  groups_cut_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

Status RocksDbStore::RecoverStateMachine() {
  if (!options_.state_machine) return Status::Ok();
  return options_.state_machine->Recover(
      [this](const std::string& prefix,
             const std::function<bool(std::string_view, std::string_view)>& visit) {
        return ScanState(prefix, visit);
      });
}

void RocksDbStore::SetWriteError(Status s) {
  write_error_ = std::move(s);
  std::lock_guard lk(error_mu_);
  write_error_text_ = write_error_.ok() ? std::string() : write_error_.message();
  write_error_permanent_ = !write_error_.ok() && resume_impossible_;
}

bool RocksDbStore::TryResume() {
  if (resume_impossible_) return false;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_resume_attempt_ < kResumeInterval) return false;
  last_resume_attempt_ = now;
  // A side write failing from here on sets it again (and fails the same way
  // if this resume does not take).
  side_write_failed_.store(false);
  rocksdb::Status rs = db_->Resume();
  if (!rs.ok()) {
    if (rs.severity() >= rocksdb::Status::Severity::kFatalError) {
      resume_impossible_ = true;
      SetWriteError(Status::Unavailable(
          Rocks(rs, "resuming writes").message() +
          "; the store cannot resume by itself: fix the disk, then restart the broker "
          "(acknowledged events are safe); nothing stored"));
    }
    return false;
  }
  // The failed group may have run the state machine past what was stored.
  // The log itself must be exactly as before the failure: a failed write
  // never reaches the memtable.
  const uint64_t before = last_position_.load(std::memory_order_relaxed);
  Status s = RecoverLastPosition();
  const uint64_t found = last_position_.load(std::memory_order_relaxed);
  if (s.ok() && found != before) {
    last_position_.store(before, std::memory_order_release);
    resume_impossible_ = true;
    SetWriteError(Status::Unavailable(
        "resuming writes in " + options_.data_dir + ": the log's last position moved from " +
        std::to_string(before) + " to " + std::to_string(found) +
        " during the failure; the store cannot resume by itself: restart the broker "
        "(acknowledged events are safe); nothing stored"));
    return false;
  }
  if (s.ok()) s = RecoverStateMachine();
  if (!s.ok()) {
    SetWriteError(Status::Unavailable("resuming writes: " + s.message() + "; nothing stored"));
    return false;
  }
  std::fprintf(stderr, "icr store: writes resumed in %s after: %s\n", options_.data_dir.c_str(),
               write_error_.message().c_str());
  SetWriteError(Status::Ok());
  write_recoveries_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

// ---------------------------------------------------------------------------
// Read path
// ---------------------------------------------------------------------------

Status RocksDbStore::ParseEvent(uint64_t position, const rocksdb::Slice& value,
                                EventPtr* out) const {
  auto stored = std::make_shared<StoredEvent>();
  if (!stored->event.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
    return Status::Corruption("event at position " + std::to_string(position) + " in " +
                              options_.data_dir + " cannot be parsed (" +
                              std::to_string(value.size()) + " bytes)");
  }
  if (stored->event.position() != position) {
    return Status::Corruption("event stored at position " + std::to_string(position) + " in " +
                              options_.data_dir + " says it is at position " +
                              std::to_string(stored->event.position()));
  }
  stored->position = position;
  stored->encoded.assign(value.data(), value.size());
  *out = std::move(stored);
  return Status::Ok();
}

Status RocksDbStore::ScanPositions(
    size_t cf, uint64_t from, std::string_view what,
    const std::function<bool(uint64_t position, const rocksdb::Slice& value, Status* s)>& visit,
    uint64_t* last_out) {
  const uint64_t last = LastPosition();
  if (last_out) *last_out = last;
  if (from == 0) from = 1;
  if (from > last) return Status::Ok();
  std::shared_lock lk(db_mu_);
  if (!db_) return Closed();
  const std::string upper = keys::EncodePosition(last + 1);
  rocksdb::Slice upper_slice(upper);
  rocksdb::ReadOptions ro;
  ro.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, cfs_[cf]));
  Status s;
  for (it->Seek(keys::EncodePosition(from)); it->Valid(); it->Next()) {
    uint64_t position = 0;
    if (!keys::DecodePosition(std::string_view(it->key().data(), it->key().size()), &position)) {
      return Status::Corruption("a key of the " + std::string(kCfNames[cf]) +
                                " column family in " + options_.data_dir +
                                " is not an 8-byte position");
    }
    if (!visit(position, it->value(), &s) || !s.ok()) return s;
  }
  if (!it->status().ok()) return Rocks(it->status(), what);
  return Status::Ok();
}

Status RocksDbStore::ReadUrgent(uint64_t from, size_t max,
                                std::vector<std::pair<uint64_t, std::string>>* out) {
  out->clear();
  if (max == 0) return Status::Ok();
  Status s = ScanPositions(kLanes, from, "reading the urgent lane index",
                           [&](uint64_t position, const rocksdb::Slice& value, Status*) {
                             out->emplace_back(position, value.ToString());
                             return out->size() < max;
                           });
  if (!s.ok()) out->clear();
  return s;
}

Status RocksDbStore::ReadEvent(uint64_t position, EventPtr* out) {
  rocksdb::PinnableSlice value;
  rocksdb::Status rs =
      db_->Get(rocksdb::ReadOptions(), cfs_[kEvents], keys::EncodePosition(position), &value);
  if (rs.IsNotFound()) {
    return Status::NotFound("no event at position " + std::to_string(position));
  }
  if (!rs.ok()) return Rocks(rs, "reading event " + std::to_string(position));
  return ParseEvent(position, value, out);
}

Status RocksDbStore::ReadFrom(uint64_t from, size_t max, std::vector<EventPtr>* out) {
  out->clear();
  if (max == 0) return Status::Ok();
  if (from == 0) from = 1;
  uint64_t expected = from;
  uint64_t last = 0;
  Status s = ScanPositions(kEvents, from, "reading events",
                           [&](uint64_t position, const rocksdb::Slice& value, Status* error) {
                             if (position != expected) return false;  // a gap: reported below
                             EventPtr e;
                             *error = ParseEvent(position, value, &e);
                             if (!error->ok()) return false;
                             out->push_back(std::move(e));
                             ++expected;
                             return out->size() < max;
                           },
                           &last);
  if (s.ok() && out->size() < max && expected <= last) {
    s = Status::Corruption("event at position " + std::to_string(expected) + " in " +
                           options_.data_dir + " is missing (positions are dense up to " +
                           std::to_string(last) + ")");
  }
  if (!s.ok()) out->clear();
  return s;
}

Status RocksDbStore::Get(uint64_t position, EventPtr* out) {
  const uint64_t last = LastPosition();
  if (position == 0 || position > last) {
    return Status::NotFound("no event at position " + std::to_string(position) +
                            " (last position " + std::to_string(last) + ")");
  }
  std::shared_lock lk(db_mu_);
  if (!db_) return Closed();
  Status s = ReadEvent(position, out);
  if (s.code() == StatusCode::kNotFound) {
    return Status::Corruption("event at position " + std::to_string(position) + " in " +
                              options_.data_dir + " is missing (last position " +
                              std::to_string(last) + ")");
  }
  return s;
}

Status RocksDbStore::ReadPatient(const std::string& nhs_number, uint64_t after, size_t max,
                                 std::vector<EventPtr>* out) {
  out->clear();
  if (nhs_number.size() != keys::kNhsNumberLength) {
    return Status::InvalidArgument("nhs_number must be 10 characters");
  }
  const uint64_t last = LastPosition();
  if (max == 0 || after >= last) return Status::Ok();
  std::shared_lock lk(db_mu_);
  if (!db_) return Closed();

  // 1. Positions from the patient index (one prefix seek).
  const std::string upper = keys::PatientKey(nhs_number, last + 1);
  rocksdb::Slice upper_slice(upper);
  rocksdb::ReadOptions ro;
  ro.prefix_same_as_start = true;
  ro.iterate_upper_bound = &upper_slice;
  std::vector<std::string> event_keys;
  {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, cfs_[kPatient]));
    for (it->Seek(keys::PatientKey(nhs_number, after + 1)); it->Valid() && event_keys.size() < max;
         it->Next()) {
      std::string_view nhs;
      uint64_t position = 0;
      if (!keys::ParsePatientKey(std::string_view(it->key().data(), it->key().size()), &nhs,
                                 &position) ||
          nhs != nhs_number) {
        return Status::Corruption("a key of the patient column family in " + options_.data_dir +
                                  " is malformed");
      }
      event_keys.push_back(keys::EncodePosition(position));
    }
    if (!it->status().ok()) return Rocks(it->status(), "reading a patient index");
  }
  if (event_keys.empty()) return Status::Ok();

  // 2. The events, in one MultiGet (keys are already sorted).
  const size_t n = event_keys.size();
  std::vector<rocksdb::Slice> slices(event_keys.begin(), event_keys.end());
  std::vector<rocksdb::PinnableSlice> values(n);
  std::vector<rocksdb::Status> statuses(n);
  db_->MultiGet(rocksdb::ReadOptions(), cfs_[kEvents], n, slices.data(), values.data(),
                statuses.data(), /*sorted_input=*/true);
  out->reserve(n);
  for (size_t i = 0; i < n; ++i) {
    uint64_t position = 0;
    keys::DecodePosition(event_keys[i], &position);
    if (statuses[i].IsNotFound()) {
      out->clear();
      return Status::Corruption("patient index entry for position " + std::to_string(position) +
                                " in " + options_.data_dir + " has no event");
    }
    if (!statuses[i].ok()) {
      out->clear();
      return Rocks(statuses[i], "reading event " + std::to_string(position));
    }
    EventPtr e;
    Status s = ParseEvent(position, values[i], &e);
    if (s.ok() && e->event.nhs_number() != nhs_number) {
      s = Status::Corruption("patient index entry for position " + std::to_string(position) +
                             " in " + options_.data_dir + " names another person's event");
    }
    if (!s.ok()) {
      out->clear();
      return s;
    }
    out->push_back(std::move(e));
  }
  return Status::Ok();
}

Status RocksDbStore::FindPositionAtTime(int64_t micros, uint64_t* position) {
  const uint64_t last = LastPosition();
  std::shared_lock lk(db_mu_);
  if (!db_) return Closed();
  // First position in [1, last] with recorded_at >= micros; last+1 if none.
  uint64_t lo = 1;
  uint64_t hi = last + 1;
  while (lo < hi) {
    const uint64_t mid = lo + (hi - lo) / 2;
    EventPtr e;
    Status s = ReadEvent(mid, &e);
    if (s.code() == StatusCode::kNotFound) {
      return Status::Corruption("event at position " + std::to_string(mid) + " in " +
                                options_.data_dir + " is missing");
    }
    if (!s.ok()) return s;
    if (ToMicros(e->event.recorded_at()) >= micros) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  *position = lo;
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Subscriptions and parked events
// ---------------------------------------------------------------------------

Status RocksDbStore::PutSubscription(const std::string& name, const std::string& value, bool sync) {
  std::shared_lock lk(db_mu_);
  if (!db_) return Closed();
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  rocksdb::WriteBatch batch;
  batch.Put(cfs_[kCursors], name, value);
  return SideWrite(wo, &batch, "writing subscription '" + name + "'");
}

Status RocksDbStore::GetSubscription(const std::string& name, std::string* value) {
  std::shared_lock lk(db_mu_);
  if (!db_) return Closed();
  rocksdb::Status rs = db_->Get(rocksdb::ReadOptions(), cfs_[kCursors], name, value);
  if (rs.IsNotFound()) return Status::NotFound("no subscription named '" + name + "'");
  return Rocks(rs, "reading subscription '" + name + "'");
}

// An iterator over one subscription's parked entries (keys name '\0' ...):
// bounded above by name '\1', so it never strays into another name's.
struct ParkedScan {
  ParkedScan(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf, const std::string& name)
      : prefix(keys::ParkedPrefix(name)), upper(prefix), upper_slice() {
    upper.back() = '\x01';
    upper_slice = rocksdb::Slice(upper);
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &upper_slice;
    it.reset(db->NewIterator(ro, cf));
  }
  const std::string prefix;
  std::string upper;
  rocksdb::Slice upper_slice;  // must outlive `it`
  std::unique_ptr<rocksdb::Iterator> it;
};

// Deleting a subscription that does not exist is not an error (a retried
// delete succeeds).
Status RocksDbStore::DeleteSubscription(const std::string& name) {
  std::shared_lock lk(db_mu_);
  if (!db_) return Closed();
  rocksdb::WriteBatch batch;
  batch.Delete(cfs_[kCursors], name);
  ParkedScan scan(db_.get(), cfs_[kParked], name);
  rocksdb::Iterator* it = scan.it.get();
  for (it->Seek(scan.prefix); it->Valid(); it->Next()) batch.Delete(cfs_[kParked], it->key());
  if (!it->status().ok()) {
    return Rocks(it->status(), "listing parked events of subscription '" + name + "'");
  }
  rocksdb::WriteOptions wo;
  wo.sync = true;
  return SideWrite(wo, &batch, "deleting subscription '" + name + "'");
}

Status RocksDbStore::ListSubscriptions(
    std::vector<std::pair<std::string, std::string>>* name_values) {
  name_values->clear();
  std::shared_lock lk(db_mu_);
  if (!db_) return Closed();
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cfs_[kCursors]));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    name_values->emplace_back(it->key().ToString(), it->value().ToString());
  }
  if (!it->status().ok()) {
    name_values->clear();
    return Rocks(it->status(), "listing subscriptions");
  }
  return Status::Ok();
}

Status RocksDbStore::PutParked(const std::string& name, uint64_t position, const std::string& value,
                               const std::string& subscription_value) {
  std::shared_lock lk(db_mu_);
  if (!db_) return Closed();
  rocksdb::WriteBatch batch;
  batch.Put(cfs_[kParked], keys::ParkedKey(name, position), value);
  batch.Put(cfs_[kCursors], name, subscription_value);
  rocksdb::WriteOptions wo;
  wo.sync = true;
  return SideWrite(wo, &batch,
                   "parking event " + std::to_string(position) + " for subscription '" + name +
                       "'");
}

Status RocksDbStore::DeleteParked(const std::string& name, uint64_t position) {
  std::shared_lock lk(db_mu_);
  if (!db_) return Closed();
  rocksdb::WriteOptions wo;
  wo.sync = true;
  rocksdb::WriteBatch batch;
  batch.Delete(cfs_[kParked], keys::ParkedKey(name, position));
  return SideWrite(
      wo, &batch,
      "deleting parked event " + std::to_string(position) + " of subscription '" + name + "'");
}

Status RocksDbStore::ListParked(const std::string& name, size_t max,
                                std::vector<std::pair<uint64_t, std::string>>* out) {
  out->clear();
  if (max == 0) return Status::Ok();
  std::shared_lock lk(db_mu_);
  if (!db_) return Closed();
  ParkedScan scan(db_.get(), cfs_[kParked], name);
  rocksdb::Iterator* it = scan.it.get();
  for (it->Seek(scan.prefix); it->Valid() && out->size() < max; it->Next()) {
    std::string_view parsed_name;
    uint64_t position = 0;
    if (!keys::ParseParkedKey(std::string_view(it->key().data(), it->key().size()), &parsed_name,
                              &position) ||
        parsed_name != name) {
      out->clear();
      return Status::Corruption("a parked key of subscription '" + name + "' in " +
                                options_.data_dir + " is malformed");
    }
    out->emplace_back(position, it->value().ToString());
  }
  if (!it->status().ok()) {
    out->clear();
    return Rocks(it->status(), "listing parked events of subscription '" + name + "'");
  }
  return Status::Ok();
}

Status RocksDbStore::GetState(const std::string& key, std::string* value) {
  std::shared_lock lk(db_mu_);
  if (!db_) return Closed();
  rocksdb::Status rs = db_->Get(rocksdb::ReadOptions(), cfs_[kState], key, value);
  if (rs.IsNotFound()) return Status::NotFound("no state record");
  return Rocks(rs, "reading a state record");
}

Status RocksDbStore::ScanState(
    const std::string& prefix,
    const std::function<bool(std::string_view, std::string_view)>& visit) {
  std::shared_lock lk(db_mu_);
  if (!db_) return Closed();
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cfs_[kState]));
  for (it->Seek(prefix); it->Valid(); it->Next()) {
    rocksdb::Slice key = it->key();
    if (!key.starts_with(prefix)) break;
    rocksdb::Slice value = it->value();
    if (!visit(std::string_view(key.data(), key.size()),
               std::string_view(value.data(), value.size()))) {
      break;
    }
  }
  return Rocks(it->status(), "scanning state records");
}

Status RocksDbStore::PutState(const std::string& key, const std::string& value) {
  std::shared_lock lk(db_mu_);
  if (!db_) return Closed();
  rocksdb::WriteOptions wo;
  wo.sync = true;
  rocksdb::WriteBatch batch;
  batch.Put(cfs_[kState], key, value);
  return SideWrite(wo, &batch, "writing a state record");
}

Status RocksDbStore::SideWrite(const rocksdb::WriteOptions& wo, rocksdb::WriteBatch* batch,
                               std::string_view what) {
  std::shared_lock wal_lk(wal_mu_);
  rocksdb::Status rs = db_->Write(wo, batch);
  if (rs.ok()) return Status::Ok();
  Status mapped = Rocks(rs, what);
  // An I/O error (a full disk included) is what leaves the WAL failed and
  // RocksDB refusing writes until resumed.
  if (!rs.IsIOError()) return mapped;
  // Refused as an event write would be: nothing of it was stored, and the
  // store (which retries by itself) refuses other writes until the disk
  // takes them again.
  Status failure(mapped.code(), mapped.message() + "; nothing stored");
  side_write_failed_.store(true);
  {
    std::lock_guard lk(mu_);
    if (!side_error_pending_) {
      side_error_ = Status(mapped.code(),
                           mapped.message() +
                               "; publishes are refused until the disk takes writes again "
                               "(the store retries by itself); nothing stored");
      side_error_pending_ = true;
    }
  }
  cv_.notify_all();
  return failure;
}

// ---------------------------------------------------------------------------
// Audit trail and retention stubs
// ---------------------------------------------------------------------------

Status RocksDbStore::OpenAuditDb() {
  rocksdb::Options options;
  options.create_if_missing = true;
  if (options_.env != nullptr) options.env = options_.env;
  // Records are written unsynced and synced about every 100 ms: a power cut
  // can lose the newest, never one in the middle (the chain stays whole).
  options.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  // A delivery writes a record: at fan-out rates that is tens of thousands
  // of small writes a second. Larger memtables flush less often, and the
  // records (hashes, ids) gain little from compression.
  options.write_buffer_size = 32u << 20;
  options.compression = rocksdb::kNoCompression;
  options.keep_log_file_num = 5;
  options.max_total_wal_size = 128u << 20;
  // Closing after a failed write must not flush through the failed WAL;
  // what it holds is recovered from the WAL on the next open.
  options.avoid_flush_during_shutdown = true;
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = cache_;
  options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  const std::string dir = options_.data_dir + "/audit";
  rocksdb::DB* raw = nullptr;
  rocksdb::Status rs = rocksdb::DB::Open(options, dir, &raw);
  if (!rs.ok()) {
    Status s = Rocks(rs, "opening the audit trail in " + dir);
    if (rs.IsCorruption()) {
      return Status::Corruption(s.message() + "; restore the directory from a backup");
    }
    return s;
  }
  audit_db_.reset(raw);
  return Status::Ok();
}

Status RocksDbStore::AuditWrite(const rocksdb::WriteOptions& wo, rocksdb::WriteBatch* batch,
                                std::string_view what) {
  if (audit_write_failed_) {
    // A WAL that failed a write is never written again (Debian's RocksDB
    // asserts on it): the database is reopened first.
    Status s = ReopenAuditDbLocked();
    if (!s.ok()) return s;
  }
  std::shared_lock db_lk(audit_db_mu_);
  rocksdb::Status rs = audit_db_->Write(wo, batch);
  if (!rs.ok()) {
    audit_write_failed_ = true;
    Status mapped = Rocks(rs, what);
    audit_failure_ = Status(mapped.code(), mapped.message() + "; nothing stored");
    return audit_failure_;
  }
  audit_dirty_ = true;
  return Status::Ok();
}

Status RocksDbStore::ReopenAuditDbLocked() {
  // Every refusal here must be an error: the caller writes on OK.
  if (audit_failure_.ok()) {
    audit_failure_ = Status::Unavailable("the audit trail's last write failed; nothing stored");
  }
  const auto now = std::chrono::steady_clock::now();
  if (now - audit_last_reopen_ < kResumeInterval) return audit_failure_;
  audit_last_reopen_ = now;
  const uint64_t had_sequence = audit_last_sequence_;
  {
    std::unique_lock db_lk(audit_db_mu_);
    if (audit_db_) {
      audit_db_->Close();  // without a flush (avoid_flush_during_shutdown)
      audit_db_.reset();
    }
    Status s = OpenAuditDb();
    if (!s.ok()) {
      audit_failure_ = Status(audit_failure_.code(),
                              "the audit trail cannot be reopened after a failed write (" +
                                  s.message() + "); nothing stored");
      return audit_failure_;
    }
  }
  Status s = RecoverAuditHeadLocked();
  if (!s.ok()) {
    audit_failure_ = Status(s.code() == StatusCode::kOk ? StatusCode::kUnavailable : s.code(),
                            s.message() + "; nothing stored");
    return audit_failure_;
  }
  if (audit_last_sequence_ < had_sequence) {
    // A failed sync can lose records the disk had not kept: their sequence
    // numbers are now reused. Say so loudly; the disclosures they recorded
    // happened.
    std::fprintf(stderr,
                 "icr store: ALERT: the audit trail in %s lost records %llu to %llu in a failed "
                 "write or sync (the disk did not keep them); new records continue from %llu. "
                 "Check the disk; the lost records' disclosures are not in the trail\n",
                 options_.data_dir.c_str(),
                 static_cast<unsigned long long>(audit_last_sequence_ + 1),
                 static_cast<unsigned long long>(had_sequence),
                 static_cast<unsigned long long>(audit_last_sequence_ + 1));
  }
  std::fprintf(stderr, "icr store: audit trail writes resumed in %s after: %s\n",
               options_.data_dir.c_str(), audit_failure_.message().c_str());
  audit_write_failed_ = false;
  return Status::Ok();
}

void RocksDbStore::AuditSyncLoop() {
  constexpr auto kAuditSyncInterval = std::chrono::milliseconds(100);
  std::unique_lock lk(audit_mu_);
  while (!audit_stop_) {
    audit_cv_.wait_for(lk, kAuditSyncInterval, [this] { return audit_stop_; });
    if (audit_stop_ || !audit_dirty_ || audit_write_failed_ || !audit_db_) continue;
    // Under audit_mu_: no append (and so no failing write) runs meanwhile.
    rocksdb::Status rs = audit_db_->SyncWAL();
    if (rs.ok()) {
      audit_dirty_ = false;
    } else {
      audit_write_failed_ = true;
      Status failed = Rocks(rs, "syncing the audit trail");
      audit_failure_ = Status(failed.ok() ? StatusCode::kUnavailable : failed.code(),
                              failed.message() + "; nothing stored");
      std::fprintf(stderr, "icr store: %s\n", failed.ToString().c_str());
    }
  }
}

Status RocksDbStore::LockAuditForRead(std::shared_lock<std::shared_mutex>* db,
                                      std::shared_lock<std::shared_mutex>* audit) {
  *db = std::shared_lock<std::shared_mutex>(db_mu_);
  if (!db_) return Closed();
  *audit = std::shared_lock<std::shared_mutex>(audit_db_mu_);
  if (!audit_db_) {
    return Status::Unavailable("the audit trail is being reopened after a failed write; retry");
  }
  return Status::Ok();
}

Status RocksDbStore::RecoverAuditHead() {
  std::lock_guard lk(audit_mu_);
  return RecoverAuditHeadLocked();
}

Status RocksDbStore::RecoverAuditHeadLocked() {
  uint64_t head_sequence = 0;
  std::string head_hash(kSha256Length, '\0');
  std::string head;
  rocksdb::Status rs = audit_db_->Get(rocksdb::ReadOptions(), kAuditHeadKey, &head);
  if (rs.ok()) {
    if (head.size() != keys::kPositionLength + kSha256Length ||
        !keys::DecodePosition(std::string_view(head).substr(0, keys::kPositionLength),
                              &head_sequence)) {
      return Status::Corruption("the audit trail's head in " + options_.data_dir +
                                " is malformed (" + std::to_string(head.size()) +
                                " bytes); restore the directory from a backup");
    }
    head_hash = head.substr(keys::kPositionLength);
  } else if (!rs.IsNotFound()) {
    return Rocks(rs, "reading the audit trail's head");
  }
  // The head is written in the same batch as the records it names, so the
  // last stored record is normally the head's. If a later record is stored
  // (the head was removed or rolled back by hand), new records go after it:
  // appending must never overwrite a record. VerifyAudit reports the break.
  const std::string upper(1, static_cast<char>(kAuditRecordTag + 1));
  rocksdb::Slice upper_slice(upper);
  rocksdb::ReadOptions ro;
  ro.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it(audit_db_->NewIterator(ro));
  it->SeekToLast();
  if (!it->status().ok()) return Rocks(it->status(), "finding the last audit record");
  uint64_t last_stored = 0;
  if (it->Valid() && it->key().size() == kAuditRecordKeyLength &&
      it->key()[0] == kAuditRecordTag) {
    keys::DecodePosition(std::string_view(it->key().data() + 1, keys::kPositionLength),
                         &last_stored);
  }
  if (last_stored > head_sequence) {
    std::fprintf(stderr,
                 "icr store: WARNING: the audit trail's head in %s names record %llu but "
                 "record %llu is stored; new records continue after %llu (icrctl audit "
                 "verify reports the break)\n",
                 options_.data_dir.c_str(), static_cast<unsigned long long>(head_sequence),
                 static_cast<unsigned long long>(last_stored),
                 static_cast<unsigned long long>(last_stored));
    head_sequence = last_stored;
    head_hash = Sha256(std::string_view(it->value().data(), it->value().size()));
    if (head_hash.empty()) return Status::Internal("SHA-256 is not available from libcrypto");
  }
  audit_last_sequence_ = head_sequence;
  audit_head_hash_ = std::move(head_hash);
  return Status::Ok();
}

Status RocksDbStore::AppendAudit(std::vector<icr::v1::AuditRecord>* records) {
  if (records->empty()) return Status::Ok();
  std::shared_lock lk(db_mu_);
  if (!db_) return Closed();
  std::lock_guard audit_lk(audit_mu_);
  // Filled in on copies: a failed write leaves the caller's records, and the
  // chain's head, as they were.
  std::vector<icr::v1::AuditRecord> filled = *records;
  rocksdb::WriteBatch batch;
  uint64_t sequence = audit_last_sequence_;
  std::string hash = audit_head_hash_;
  const int64_t now = NowMicros();
  std::string bytes;
  for (icr::v1::AuditRecord& record : filled) {
    ++sequence;
    record.set_sequence(sequence);
    if (!record.has_at()) SetTimestamp(record.mutable_at(), now);
    record.set_previous_hash(hash);
    if (!SerializeAuditRecord(record, &bytes)) {
      return Status::Internal("audit record " + std::to_string(sequence) +
                              " could not be serialized; nothing stored");
    }
    hash = Sha256(bytes);
    if (hash.empty()) {
      return Status::Internal("SHA-256 is not available from libcrypto; nothing stored");
    }
    batch.Put(AuditRecordKey(sequence), bytes);
    if (!record.nhs_number().empty()) {
      batch.Put(AuditPersonKey(record.nhs_number(), sequence), rocksdb::Slice());
    }
  }
  std::string head = keys::EncodePosition(sequence);
  head += hash;
  batch.Put(kAuditHeadKey, head);
  // To the audit log's WAL, not synced: the audit syncer makes it durable
  // within about 100 ms (AuditSyncLoop); a crash of the process loses
  // nothing, a power cut at most that.
  rocksdb::WriteOptions wo;
  wo.sync = false;
  Status s = AuditWrite(wo, &batch, "appending " + std::to_string(filled.size()) +
                                       " audit record(s)");
  if (!s.ok()) return s;
  audit_last_sequence_ = sequence;
  audit_head_hash_ = std::move(hash);
  *records = std::move(filled);
  return Status::Ok();
}

Status RocksDbStore::ReadAudit(uint64_t from, size_t max,
                               std::vector<icr::v1::AuditRecord>* out) {
  out->clear();
  if (max == 0) return Status::Ok();
  std::shared_lock<std::shared_mutex> lk, audit_lk;
  if (Status open = LockAuditForRead(&lk, &audit_lk); !open.ok()) return open;
  const std::string upper(1, static_cast<char>(kAuditRecordTag + 1));
  rocksdb::Slice upper_slice(upper);
  rocksdb::ReadOptions ro;
  ro.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it(audit_db_->NewIterator(ro));
  for (it->Seek(AuditRecordKey(std::max<uint64_t>(from, 1))); it->Valid() && out->size() < max;
       it->Next()) {
    uint64_t sequence = 0;
    if (it->key().size() != kAuditRecordKeyLength ||
        !keys::DecodePosition(std::string_view(it->key().data() + 1, keys::kPositionLength),
                              &sequence)) {
      out->clear();
      return Status::Corruption("a key of the audit trail in " + options_.data_dir +
                                " is malformed");
    }
    icr::v1::AuditRecord record;
    if (!record.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      out->clear();
      return Status::Corruption("audit record " + std::to_string(sequence) + " in " +
                                options_.data_dir + " cannot be parsed (" +
                                std::to_string(it->value().size()) + " bytes)");
    }
    out->push_back(std::move(record));
  }
  if (!it->status().ok()) {
    out->clear();
    return Rocks(it->status(), "reading the audit trail");
  }
  return Status::Ok();
}

Status RocksDbStore::VerifyAudit(const std::function<void(uint64_t, uint64_t)>& progress,
                                 AuditVerifyResult* result) {
  *result = AuditVerifyResult();
  std::shared_lock<std::shared_mutex> lk, audit_lk;
  if (Status open = LockAuditForRead(&lk, &audit_lk); !open.ok()) return open;
  // One consistent view: appends may go on meanwhile.
  rocksdb::ManagedSnapshot snapshot(audit_db_.get());
  rocksdb::ReadOptions ro;
  ro.snapshot = snapshot.snapshot();

  std::string head;
  rocksdb::Status rs = audit_db_->Get(ro, kAuditHeadKey, &head);
  if (!rs.ok() && !rs.IsNotFound()) return Rocks(rs, "reading the audit trail's head");
  const bool have_head = rs.ok();
  uint64_t head_sequence = 0;
  const bool head_well_formed =
      have_head && head.size() == keys::kPositionLength + kSha256Length &&
      keys::DecodePosition(std::string_view(head).substr(0, keys::kPositionLength),
                           &head_sequence);

  const std::string upper(1, static_cast<char>(kAuditRecordTag + 1));
  rocksdb::Slice upper_slice(upper);
  ro.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it(audit_db_->NewIterator(ro));

  // The total for progress: the head's sequence, or the last stored record's
  // if that is further.
  uint64_t total = head_sequence;
  it->SeekToLast();
  if (!it->status().ok()) return Rocks(it->status(), "finding the last audit record");
  if (it->Valid() && it->key().size() == kAuditRecordKeyLength) {
    uint64_t last_key = 0;
    keys::DecodePosition(std::string_view(it->key().data() + 1, keys::kPositionLength),
                         &last_key);
    total = std::max(total, last_key);
  }

  auto fail = [result](uint64_t sequence, std::string problem) {
    result->intact = false;
    result->first_bad_sequence = sequence;
    result->problem = std::move(problem);
  };
  uint64_t expected = 1;
  std::string previous_hash(kSha256Length, '\0');
  for (it->Seek(AuditRecordKey(0)); it->Valid(); it->Next()) {
    uint64_t sequence = 0;
    if (it->key().size() != kAuditRecordKeyLength ||
        !keys::DecodePosition(std::string_view(it->key().data() + 1, keys::kPositionLength),
                              &sequence)) {
      fail(expected, "the key after record " + std::to_string(expected - 1) +
                         " is not a record key (" + std::to_string(it->key().size()) +
                         " bytes): something was inserted");
      break;
    }
    if (sequence != expected) {
      // Keys are in order, so a later sequence means a gap.
      fail(expected, sequence == expected + 1
                         ? "record " + std::to_string(expected) +
                               " is missing (the next stored record is " +
                               std::to_string(sequence) + "): it was removed"
                         : "records " + std::to_string(expected) + "-" +
                               std::to_string(sequence - 1) +
                               " are missing (the next stored record is " +
                               std::to_string(sequence) + "): they were removed");
      break;
    }
    const rocksdb::Slice value = it->value();
    icr::v1::AuditRecord record;
    if (!record.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
      fail(sequence, "record " + std::to_string(sequence) + " cannot be parsed (" +
                         std::to_string(value.size()) + " bytes): it was changed or damaged");
      break;
    }
    if (record.sequence() != sequence) {
      fail(sequence, "record " + std::to_string(sequence) + " says it is record " +
                         std::to_string(record.sequence()) + ": it was changed or moved");
      break;
    }
    if (record.previous_hash() != previous_hash) {
      fail(sequence,
           sequence == 1
               ? std::string("record 1: its previous_hash is not 32 zero bytes (record 1 was "
                             "changed, or records were removed before it)")
               : "record " + std::to_string(sequence) +
                     ": its previous_hash does not match the hash of record " +
                     std::to_string(sequence - 1) + " (record " + std::to_string(sequence - 1) +
                     " was changed, or a record was removed or inserted)");
      break;
    }
    previous_hash = Sha256(std::string_view(value.data(), value.size()));
    if (previous_hash.empty()) return Status::Internal("SHA-256 is not available from libcrypto");
    ++result->checked;
    ++expected;
    if (progress && result->checked % kAuditProgressEvery == 0) {
      progress(result->checked, total);
    }
  }
  if (!it->status().ok()) return Rocks(it->status(), "reading the audit trail");

  const uint64_t last = expected - 1;  // the last record checked
  if (result->intact) {
    if (!have_head) {
      if (last != 0) {
        fail(last, "the head is missing, but records 1-" + std::to_string(last) +
                       " are stored: the head was removed");
      }
    } else if (!head_well_formed) {
      fail(last, "the head is malformed (" + std::to_string(head.size()) +
                     " bytes, not a sequence and a SHA-256): it was changed");
    } else if (head_sequence > last) {
      fail(last + 1, "the head names record " + std::to_string(head_sequence) +
                         " but the last stored record is " + std::to_string(last) +
                         ": records " + std::to_string(last + 1) + "-" +
                         std::to_string(head_sequence) +
                         " were removed (the trail was truncated)");
    } else if (head_sequence < last) {
      fail(head_sequence + 1, "the head names record " + std::to_string(head_sequence) +
                                  " but records up to " + std::to_string(last) +
                                  " are stored: records after " +
                                  std::to_string(head_sequence) +
                                  " were added without the head, or the head was rolled back");
    } else if (std::string_view(head).substr(keys::kPositionLength) != previous_hash) {
      fail(last, "the head's hash does not match the hash of record " + std::to_string(last) +
                     " (record " + std::to_string(last) + " was changed)");
    }
  }
  result->head_hash = previous_hash;
  return Status::Ok();
}

Status RocksDbStore::AuditForPerson(const std::string& nhs_number, uint64_t after, size_t max,
                                    std::vector<icr::v1::AuditRecord>* out) {
  out->clear();
  if (nhs_number.empty()) return Status::InvalidArgument("nhs_number is empty");
  if (max == 0 || after == UINT64_MAX) return Status::Ok();
  std::shared_lock<std::shared_mutex> lk, audit_lk;
  if (Status open = LockAuditForRead(&lk, &audit_lk); !open.ok()) return open;
  rocksdb::ManagedSnapshot snapshot(audit_db_.get());
  rocksdb::ReadOptions ro;
  ro.snapshot = snapshot.snapshot();

  // 1. Sequences from the person index.
  const std::string prefix = std::string(1, kAuditPersonTag) + nhs_number;
  std::vector<std::string> record_keys;
  {
    std::unique_ptr<rocksdb::Iterator> it(audit_db_->NewIterator(ro));
    for (it->Seek(AuditPersonKey(nhs_number, after + 1));
         it->Valid() && record_keys.size() < max; it->Next()) {
      const rocksdb::Slice key = it->key();
      if (!key.starts_with(prefix)) break;
      // A longer identifier that starts with this one: another person's.
      if (key.size() != prefix.size() + keys::kPositionLength) continue;
      uint64_t sequence = 0;
      keys::DecodePosition(std::string_view(key.data() + prefix.size(), keys::kPositionLength),
                           &sequence);
      record_keys.push_back(AuditRecordKey(sequence));
    }
    if (!it->status().ok()) return Rocks(it->status(), "reading the audit trail's person index");
  }
  if (record_keys.empty()) return Status::Ok();

  // 2. The records (keys already sorted).
  const size_t n = record_keys.size();
  std::vector<rocksdb::Slice> slices(record_keys.begin(), record_keys.end());
  std::vector<rocksdb::PinnableSlice> values(n);
  std::vector<rocksdb::Status> statuses(n);
  audit_db_->MultiGet(ro, audit_db_->DefaultColumnFamily(), n, slices.data(), values.data(), statuses.data(),
                /*sorted_input=*/true);
  out->reserve(n);
  for (size_t i = 0; i < n; ++i) {
    uint64_t sequence = 0;
    keys::DecodePosition(std::string_view(record_keys[i]).substr(1), &sequence);
    Status s;
    icr::v1::AuditRecord record;
    if (statuses[i].IsNotFound()) {
      s = Status::Corruption("the audit trail's person index in " + options_.data_dir +
                             " names record " + std::to_string(sequence) +
                             ", which is missing");
    } else if (!statuses[i].ok()) {
      s = Rocks(statuses[i], "reading audit record " + std::to_string(sequence));
    } else if (!record.ParseFromArray(values[i].data(), static_cast<int>(values[i].size()))) {
      s = Status::Corruption("audit record " + std::to_string(sequence) + " in " +
                             options_.data_dir + " cannot be parsed (" +
                             std::to_string(values[i].size()) + " bytes)");
    } else if (record.nhs_number() != nhs_number) {
      s = Status::Corruption("the audit trail's person index in " + options_.data_dir +
                             " names record " + std::to_string(sequence) +
                             ", which is about another person");
    }
    if (!s.ok()) {
      out->clear();
      return s;
    }
    out->push_back(std::move(record));
  }
  return Status::Ok();
}

Status RocksDbStore::ReplaceWithStub(uint64_t position, const CareEvent& stub) {
  const uint64_t last = LastPosition();
  if (position == 0 || position > last) {
    return Status::NotFound("no event at position " + std::to_string(position) +
                            " (last position " + std::to_string(last) + ")");
  }
  std::shared_lock lk(db_mu_);
  if (!db_) return Closed();
  EventPtr stored;
  Status s = ReadEvent(position, &stored);
  if (s.code() == StatusCode::kNotFound) {
    return Status::Corruption("event at position " + std::to_string(position) + " in " +
                              options_.data_dir + " is missing (last position " +
                              std::to_string(last) + ")");
  }
  if (!s.ok()) return s;
  const CareEvent& event = stored->event;
  std::string mismatch;
  if (stub.position() != position) {
    mismatch = "its position is " + std::to_string(stub.position());
  } else if (stub.event_id() != event.event_id()) {
    mismatch = "its event_id '" + stub.event_id() + "' is not the stored event's '" +
               event.event_id() + "'";
  } else if (stub.nhs_number() != event.nhs_number()) {
    mismatch = "its nhs_number is not the stored event's";  // not named: personal data
  } else if (stub.event_type() != event.event_type()) {
    mismatch = "its event_type is " + icr::v1::EventType_Name(stub.event_type()) +
               ", the stored event's is " + icr::v1::EventType_Name(event.event_type());
  } else if (ToMicros(stub.recorded_at()) != ToMicros(event.recorded_at())) {
    // FindPositionAtTime relies on recorded_at rising with position.
    mismatch = "its recorded_at is not the stored event's";
  } else if (!stub.has_purged_at()) {
    mismatch = "it has no purged_at";
  } else if (stub.payload_case() != CareEvent::PAYLOAD_NOT_SET) {
    mismatch = "it still carries a payload (field " +
               std::to_string(static_cast<int>(stub.payload_case())) + ")";
  }
  if (!mismatch.empty()) {
    return Status::InvalidArgument("the stub for position " + std::to_string(position) +
                                   " does not match the stored event: " + mismatch +
                                   "; nothing changed");
  }
  std::string bytes;
  if (!stub.SerializeToString(&bytes)) {
    return Status::Internal("the stub for position " + std::to_string(position) +
                            " could not be serialized; nothing changed");
  }
  // Only the event's value changes: the patient, urgent-lane and idempotency
  // entries all name the position, which stays. Synced: a deliberate,
  // irreversible operator action.
  rocksdb::WriteBatch batch;
  batch.Put(cfs_[kEvents], keys::EncodePosition(position), bytes);
  rocksdb::WriteOptions wo;
  wo.sync = true;
  return SideWrite(wo, &batch, "replacing event " + std::to_string(position) + " by a stub");
}

StoreStats RocksDbStore::Stats() const {
  StoreStats s;
  s.last_position = LastPosition();
  s.appended_events = appended_events_.load(std::memory_order_relaxed);
  s.duplicate_events = duplicate_events_.load(std::memory_order_relaxed);
  s.write_batches = write_batches_.load(std::memory_order_relaxed);
  s.groups_cut = groups_cut_.load(std::memory_order_relaxed);
  s.write_recoveries = write_recoveries_.load(std::memory_order_relaxed);
  std::lock_guard lk(error_mu_);
  s.write_error = write_error_text_;
  s.write_error_permanent = write_error_permanent_;
  return s;
}

}  // namespace

Status OpenRocksDbStore(const StoreOptions& options, std::unique_ptr<EventStore>* out) {
  auto store = std::make_unique<RocksDbStore>(options);
  Status s = store->Open();
  if (!s.ok()) return s;  // the destructor closes whatever was opened
  *out = std::move(store);
  return Status::Ok();
}

}  // namespace icr::store
