#include "broker/governance/minimise.h"

#include <cctype>
#include <string_view>

namespace icr::broker::governance {

namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

bool AllSensitive(const Profile& profile) {
  return profile.sensitive.count(icr::v1::SAFEGUARDING) &&
         profile.sensitive.count(icr::v1::SEXUAL_HEALTH) &&
         profile.sensitive.count(icr::v1::MENTAL_HEALTH_DETENTION);
}

std::string Child(const std::string& path, std::string_view name) {
  return path.empty() ? std::string(name) : path + "." + std::string(name);
}

std::string Element(const std::string& path, std::string_view name, int index) {
  return Child(path, name) + "[" + std::to_string(index) + "]";
}

// Whether an alert mentions safeguarding: lower-cased, without spaces,
// underscores and hyphens, it contains "safeguarding".
bool MentionsSafeguarding(std::string_view alert) {
  std::string folded;
  folded.reserve(alert.size());
  for (unsigned char c : alert) {
    if (c == ' ' || c == '_' || c == '-' || c == '\t') continue;
    folded += static_cast<char>(std::tolower(c));
  }
  return folded.find("safeguarding") != std::string::npos;
}

// One minimisation pass: the profile, and where removed paths are recorded
// (nullptr: not recorded).
class Minimiser {
 public:
  Minimiser(const Profile& profile, std::vector<std::string>* removed)
      : profile_(profile), removed_(removed) {}

  void Event(icr::v1::CareEvent* event) {
    if (profile_.all_fields && AllSensitive(profile_)) return;
    const Reflection* r = event->GetReflection();
    const auto* oneof = event->GetDescriptor()->FindOneofByName("payload");
    const FieldDescriptor* payload = r->GetOneofFieldDescriptor(*event, oneof);
    r->MutableUnknownFields(event)->Clear();
    if (payload == nullptr) return;
    const std::string& name = payload->name();
    if (!profile_.all_fields && !profile_.fields.count(name)) {
      if (!Mentions(name)) {
        Record(name);
        r->ClearField(event, payload);
        return;
      }
      Prune(r->MutableMessage(event, payload), name, name);
    }
    Message* kept = r->MutableMessage(event, payload);
    kept->DiscardUnknownFields();
    RemoveSensitive(kept, name);
  }

  void Summary(icr::v1::CareSummary* summary) {
    if (profile_.all_summary && AllSensitive(profile_)) return;
    const Reflection* r = summary->GetReflection();
    if (!profile_.all_summary) {
      std::vector<const FieldDescriptor*> fields;
      r->ListFields(*summary, &fields);
      for (const FieldDescriptor* f : fields) {
        if (AlwaysKept(f->number()) || profile_.summary_fields.count(f->name())) continue;
        Record(f->name());
        r->ClearField(summary, f);
      }
    }
    summary->DiscardUnknownFields();
    RemoveSensitive(summary, "");
  }

 private:
  static bool AlwaysKept(int number) {
    using S = icr::v1::CareSummary;
    return number == S::kNhsNumberFieldNumber || number == S::kRequestedNhsNumberFieldNumber ||
           number == S::kRetiredNhsNumbersFieldNumber || number == S::kLastPositionFieldNumber ||
           number == S::kEventsFieldNumber;
  }

  void Record(std::string path) {
    if (removed_ != nullptr) removed_->push_back(std::move(path));
  }

  bool Allows(int category) const { return profile_.sensitive.count(category) > 0; }

  // Whether some profile path lies strictly below `path`.
  bool Mentions(const std::string& path) const {
    const std::string prefix = path + ".";
    auto it = profile_.fields.lower_bound(prefix);
    return it != profile_.fields.end() && it->compare(0, prefix.size(), prefix) == 0;
  }

  // Keeps in `m` (at profile path `path`, shown as `shown` with indices)
  // only the fields the profile names or leads to.
  void Prune(Message* m, const std::string& path, const std::string& shown) {
    const Reflection* r = m->GetReflection();
    std::vector<const FieldDescriptor*> fields;
    r->ListFields(*m, &fields);
    for (const FieldDescriptor* f : fields) {
      const std::string child = path + "." + f->name();
      if (profile_.fields.count(child)) continue;  // kept whole
      if (f->type() == FieldDescriptor::TYPE_MESSAGE && Mentions(child)) {
        if (f->is_repeated()) {
          for (int i = 0; i < r->FieldSize(*m, f); ++i) {
            Prune(r->MutableRepeatedMessage(m, f, i), child, Element(shown, f->name(), i));
          }
        } else {
          Prune(r->MutableMessage(m, f), child, Child(shown, f->name()));
        }
        continue;
      }
      Record(Child(shown, f->name()));
      r->ClearField(m, f);
    }
  }

  void ClearIfSet(Message* m, const char* name, const std::string& shown) {
    const FieldDescriptor* f = m->GetDescriptor()->FindFieldByName(name);
    const Reflection* r = m->GetReflection();
    if (f != nullptr && r->HasField(*m, f)) {
      Record(Child(shown, name));
      r->ClearField(m, f);
    }
  }

  // Removes the elements of repeated field `f` for which `drop(i)` holds,
  // keeping the others in order.
  template <typename Drop>
  void RemoveElements(Message* m, const FieldDescriptor* f, const std::string& shown, Drop drop) {
    const Reflection* r = m->GetReflection();
    const int n = r->FieldSize(*m, f);
    int kept = 0;
    for (int i = 0; i < n; ++i) {
      if (drop(i)) {
        Record(Element(shown, f->name(), i));
        continue;
      }
      if (i != kept) r->SwapElements(m, f, i, kept);
      ++kept;
    }
    for (int i = kept; i < n; ++i) r->RemoveLast(m, f);
  }

  bool CodeAllowed(const Message& code) const {
    const FieldDescriptor* f =
        code.GetDescriptor()->FindFieldByNumber(icr::v1::Code::kSensitivityFieldNumber);
    const int category = code.GetReflection()->GetEnumValue(code, f);
    return category == icr::v1::SENSITIVE_CATEGORY_UNSPECIFIED || Allows(category);
  }

  // Removes the sensitive items the profile does not allow from `m` and
  // every message below it.
  void RemoveSensitive(Message* m, const std::string& shown) {
    const Descriptor* d = m->GetDescriptor();
    const Reflection* r = m->GetReflection();
    if (!Allows(icr::v1::SAFEGUARDING)) {
      if (d == icr::v1::CareNeeds::descriptor()) ClearIfSet(m, "safeguarding_detail", shown);
      if (d == icr::v1::CareFlags::descriptor()) ClearIfSet(m, "safeguarding", shown);
      if (d == icr::v1::CareSummaryContribution::descriptor() ||
          d == icr::v1::CareSummary::descriptor()) {
        const FieldDescriptor* alerts = d->FindFieldByName("alerts");
        RemoveElements(m, alerts, shown, [&](int i) {
          return MentionsSafeguarding(r->GetRepeatedString(*m, alerts, i));
        });
      }
    }
    if (!Allows(icr::v1::MENTAL_HEALTH_DETENTION) &&
        d == icr::v1::MentalHealthEpisodeStart::descriptor()) {
      ClearIfSet(m, "detained", shown);
    }

    std::vector<const FieldDescriptor*> fields;
    r->ListFields(*m, &fields);
    for (const FieldDescriptor* f : fields) {
      if (f->type() != FieldDescriptor::TYPE_MESSAGE) continue;
      const bool is_code = f->message_type() == icr::v1::Code::descriptor();
      if (f->is_repeated()) {
        if (is_code) {
          RemoveElements(m, f, shown,
                         [&](int i) { return !CodeAllowed(r->GetRepeatedMessage(*m, f, i)); });
        } else {
          for (int i = 0; i < r->FieldSize(*m, f); ++i) {
            RemoveSensitive(r->MutableRepeatedMessage(m, f, i), Element(shown, f->name(), i));
          }
        }
      } else if (is_code) {
        if (!CodeAllowed(r->GetMessage(*m, f))) {
          Record(Child(shown, f->name()));
          r->ClearField(m, f);
        }
      } else {
        RemoveSensitive(r->MutableMessage(m, f), Child(shown, f->name()));
      }
    }
  }

  const Profile& profile_;
  std::vector<std::string>* const removed_;
};

}  // namespace

void MinimiseEvent(const Profile& profile, icr::v1::CareEvent* event) {
  Minimiser(profile, nullptr).Event(event);
}

void MinimiseSummary(const Profile& profile, icr::v1::CareSummary* summary) {
  Minimiser(profile, nullptr).Summary(summary);
}

std::vector<std::string> RemovedPaths(const Profile& profile, const icr::v1::CareEvent& event) {
  std::vector<std::string> removed;
  icr::v1::CareEvent copy = event;
  Minimiser(profile, &removed).Event(&copy);
  return removed;
}

}  // namespace icr::broker::governance
