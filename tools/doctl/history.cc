// history: a channel's persisted messages, oldest first, optionally followed as they arrive.
//
// ChannelWebSocket (objects/channel_websocket.cc) keeps a channel's history in the table
// channel_messages of the object named by the channel id: each message has a UUID `id` and a
// `seq`, one sequence that gives the channel's total order. Shard objects ("<channelId>#<k>")
// hold the sockets of a sharded channel and no history today; doctl still reads the table from
// any shard that has one and merges everything by seq, so the output stays one sequence if
// that ever changes. A table the previous version wrote (`id INTEGER PRIMARY KEY`, no UUID)
// and the host has not opened since (it migrates on first open) is read too: its ids are the
// seqs, and its messages have no UUID yet.
#include <signal.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <csignal>
#include <climits>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <map>
#include <memory>
#include <set>

#include <fmt/format.h>

#include "commands.h"
#include "data_dir.h"
#include "query.h"

namespace doctl {
namespace {

constexpr char kChannelClass[] = "ChannelWebSocket";
constexpr char kMessagesTable[] = "channel_messages";
// objects/channel_websocket.h: kChannelMaxShards.
constexpr int kMaxShards = 256;

volatile std::sig_atomic_t gStop = 0;

void onSignal(int) { gStop = 1; }

struct Message {
  int64_t seq = 0;
  std::optional<std::string> id;  // the UUID; none in a table the host has not migrated yet
  std::string channel;
  std::string userId;
  std::string username;
  std::string content;
  int64_t timestamp = 0;
  dohost::SqlValue threadId;  // NULL, INTEGER or TEXT
};

// One object that may hold part of the channel's history, opened when its file appears.
struct Source {
  ObjectFile file;
  std::unique_ptr<dohost::storage::ObjectDatabase> db;
  bool migrated = false;  // seen with `seq` (the host never turns it back)
};

enum class MessagesShape { kNone, kOld, kCurrent };

// Whether `source` has the messages table, and in which shape.
MessagesShape messagesTable(Source& source) {
  if (source.migrated) return MessagesShape::kCurrent;
  Query columns(source.db->handle(), "SELECT name FROM pragma_table_info(?1)");
  columns.bind(1, kMessagesTable);
  bool any = false;
  while (columns.step()) {
    any = true;
    if (columns.bytes(0) == "seq") source.migrated = true;
  }
  if (!any) return MessagesShape::kNone;
  return source.migrated ? MessagesShape::kCurrent : MessagesShape::kOld;
}

class History {
 public:
  History(const DataDir& data, const HistoryOptions& options)
      : data_(data), options_(options), channelName_(options.channel) {}

  // Opens the channel object and any shard objects that exist now. False if none does.
  bool discover() {
    if (!mainFound_) {
      // The first look accepts an id or a stored name; later ones (--follow waiting for the
      // channel to be created) only check the file its name gives, which is cheap.
      std::optional<ObjectFile> main;
      if (!looked_) {
        main = data_.find(kChannelClass, options_.channel);
        looked_ = true;
      } else if (ObjectFile byName = data_.fileForName(kChannelClass, options_.channel);
                 std::filesystem::exists(byName.path)) {
        main = byName;
      }
      if (main && !opened_.contains(main->id)) {
        mainFound_ = true;
        // Named by id: the shards are named after the channel's stored name.
        ObjectInfo info = readObject(*main, false);
        if (info.name) channelName_ = *info.name;
        open(*main);
      }
    }
    std::error_code error;
    if (std::filesystem::is_directory(std::filesystem::path(data_.root()) / kChannelClass,
                                      error)) {
      for (int k = 0; k < kMaxShards; ++k) {
        ObjectFile shard = data_.fileForName(kChannelClass, fmt::format("{}#{}", channelName_, k));
        if (!opened_.contains(shard.id) && std::filesystem::exists(shard.path, error)) {
          open(shard);
        }
      }
    }
    return !sources_.empty();
  }

  // The seq of the message with this id, if any source has it.
  std::optional<int64_t> seqOf(const std::string& id) {
    for (Source& source : sources_) {
      if (messagesTable(source) != MessagesShape::kCurrent) continue;
      Query q(source.db->handle(), "SELECT seq FROM channel_messages WHERE id = ?1");
      q.bind(1, id);
      if (q.step()) return q.integer(0);
    }
    return std::nullopt;
  }

  // Messages with a seq greater than `after` (and not older than --since), at most `limit`,
  // merged across sources by seq.
  std::vector<Message> read(int64_t after, int64_t limit) {
    std::map<int64_t, Message> merged;
    for (Source& source : sources_) {
      MessagesShape table = messagesTable(source);
      if (table == MessagesShape::kNone) continue;
      Query q(source.db->handle(),
              table == MessagesShape::kCurrent
                  ? "SELECT seq, id, channel, user_id, username, content, timestamp, thread_id"
                    " FROM channel_messages WHERE seq > ?1 AND timestamp >= ?2"
                    " ORDER BY seq LIMIT ?3"
                  // The old id was the rowid, as seq is now: right even if the host
                  // migrates the table between the two statements.
                  : "SELECT rowid, NULL, channel, user_id, username, content, timestamp,"
                    " thread_id FROM channel_messages WHERE rowid > ?1 AND timestamp >= ?2"
                    " ORDER BY rowid LIMIT ?3");
      q.bind(1, after).bind(2, options_.sinceMs.value_or(INT64_MIN)).bind(3, limit);
      while (q.step()) {
        Message m;
        m.seq = q.integer(0);
        if (!q.isNull(1)) m.id = q.bytes(1);
        m.channel = q.bytes(2);
        m.userId = q.bytes(3);
        m.username = q.bytes(4);
        m.content = q.bytes(5);
        m.timestamp = q.integer(6);
        m.threadId = q.value(7);
        merged.try_emplace(m.seq, std::move(m));
      }
    }
    std::vector<Message> out;
    for (auto& [id, m] : merged) {
      if (static_cast<int64_t>(out.size()) >= limit) break;
      out.push_back(std::move(m));
    }
    return out;
  }

 private:
  void open(const ObjectFile& file) {
    sources_.push_back({file, openReadOnly(file.path)});
    opened_.insert(file.id);
  }

  const DataDir& data_;
  const HistoryOptions& options_;
  std::string channelName_;
  std::vector<Source> sources_;
  std::set<std::string> opened_;
  bool looked_ = false;
  bool mainFound_ = false;
};

std::string threadText(const dohost::SqlValue& thread) {
  if (std::holds_alternative<int64_t>(thread)) return std::to_string(std::get<int64_t>(thread));
  if (std::holds_alternative<std::string>(thread)) return std::get<std::string>(thread);
  if (std::holds_alternative<double>(thread)) return fmt::format("{}", std::get<double>(thread));
  return "";
}

void printMessage(const Message& m, bool asJson) {
  std::string line;
  if (asJson) {
    json j{{"id", m.id ? json(*m.id) : json()},
           {"seq", m.seq},
           {"channelId", m.channel},
           {"userId", m.userId},
           {"username", m.username},
           {"content", m.content},
           {"timestamp", m.timestamp}};
    if (std::holds_alternative<int64_t>(m.threadId)) {
      j["threadId"] = std::get<int64_t>(m.threadId);
    } else if (!std::holds_alternative<std::nullptr_t>(m.threadId)) {
      j["threadId"] = threadText(m.threadId);
    }
    line = j.dump(-1, ' ', false, json::error_handler_t::replace);
  } else {
    std::string user = displayBytes(m.username);
    if (m.userId != m.username) user += " (" + displayBytes(m.userId) + ")";
    // The seq is the short handle (--after takes it); --json has the UUID too.
    line = fmt::format("{}  #{}  {}: {}", formatTime(m.timestamp), m.seq, user,
                       displayBytes(m.content));
    if (!std::holds_alternative<std::nullptr_t>(m.threadId)) {
      line += "  [thread " + displayBytes(threadText(m.threadId)) + "]";
    }
  }
  line.push_back('\n');
  std::fwrite(line.data(), 1, line.size(), stdout);
}

// Sleeps `ms` or until a signal arrives.
void pause(int ms) {
  timespec delay{ms / 1000, static_cast<long>(ms % 1000) * 1000000L};
  nanosleep(&delay, nullptr);
}

// The canonical text form of a UUID: 8-4-4-4-12 hex digits (objects/uuid.h: isUuid).
bool isUuid(const std::string& text) {
  if (text.size() != 36) return false;
  for (size_t i = 0; i < text.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    bool ok = dash ? text[i] == '-' : std::isxdigit(static_cast<unsigned char>(text[i])) != 0;
    if (!ok) return false;
  }
  return true;
}

}  // namespace

bool parseHistoryAfter(const std::string& text, HistoryOptions& history) {
  if (isUuid(text)) {
    std::string id = text;
    for (char& c : id) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    history.afterId = id;
    return true;
  }
  int64_t seq = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), seq);
  if (text.empty() || text.front() == '-' || ec != std::errc() ||
      end != text.data() + text.size()) {
    return false;
  }
  history.afterSeq = seq;
  return true;
}

int runHistory(const GlobalOptions& options, const HistoryOptions& history) {
  DataDir data(options.dataDir);
  History reader(data, history);
  if (!reader.discover() && !history.follow) {
    throw CliError(kExitFailed, fmt::format("no channel {} in {} (no {} object named {})",
                                            history.channel, data.root(), kChannelClass,
                                            history.channel));
  }
  int64_t left = history.limit.value_or(INT64_MAX);
  int64_t last = history.afterSeq.value_or(0);
  if (history.afterId) {
    std::optional<int64_t> seq = reader.seqOf(*history.afterId);
    if (!seq) {
      throw CliError(kExitFailed, fmt::format("no message {} in channel {}", *history.afterId,
                                              history.channel));
    }
    last = *seq;
  }
  auto printBatch = [&] {
    for (const Message& m : reader.read(last, left)) {
      printMessage(m, options.json);
      last = m.seq;
      --left;
    }
    std::fflush(stdout);
  };
  printBatch();
  if (!history.follow) return 0;
  struct sigaction action {};
  action.sa_handler = onSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0;  // no SA_RESTART: the signal cuts the sleep short
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  while (!gStop && left > 0) {
    pause(history.pollMs);
    if (gStop) break;
    reader.discover();
    printBatch();
  }
  return 0;
}

}  // namespace doctl
