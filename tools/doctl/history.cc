// history: a channel's persisted messages, oldest first, optionally followed as they arrive.
//
// ChannelWebSocket (objects/channel_websocket.cc) keeps a channel's history in the table
// channel_messages of the object named by the channel id; ids are one sequence, so they give
// the channel's total order. Shard objects ("<channelId>#<k>") hold the sockets of a sharded
// channel and no history today; doctl still reads the table from any shard that has one and
// merges everything by message id, so the output stays one sequence if that ever changes.
#include <signal.h>
#include <unistd.h>

#include <cerrno>
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
  int64_t id = 0;
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
};

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

  // Messages with an id greater than `after` (and not older than --since), at most `limit`,
  // merged across sources by id.
  std::vector<Message> read(int64_t after, int64_t limit) {
    std::map<int64_t, Message> merged;
    for (Source& source : sources_) {
      sqlite3* db = source.db->handle();
      {
        Query exists(db, "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1");
        exists.bind(1, kMessagesTable);
        if (!exists.step()) continue;
      }
      Query q(db,
              "SELECT id, channel, user_id, username, content, timestamp, thread_id"
              " FROM channel_messages WHERE id > ?1 AND timestamp >= ?2 ORDER BY id LIMIT ?3");
      q.bind(1, after).bind(2, options_.sinceMs.value_or(INT64_MIN)).bind(3, limit);
      while (q.step()) {
        Message m;
        m.id = q.integer(0);
        m.channel = q.bytes(1);
        m.userId = q.bytes(2);
        m.username = q.bytes(3);
        m.content = q.bytes(4);
        m.timestamp = q.integer(5);
        m.threadId = q.value(6);
        merged.try_emplace(m.id, std::move(m));
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
    json j{{"id", m.id},
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
    line = fmt::format("{}  #{}  {}: {}", formatTime(m.timestamp), m.id, user,
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

}  // namespace

int runHistory(const GlobalOptions& options, const HistoryOptions& history) {
  DataDir data(options.dataDir);
  History reader(data, history);
  if (!reader.discover() && !history.follow) {
    throw CliError(kExitFailed, fmt::format("no channel {} in {} (no {} object named {})",
                                            history.channel, data.root(), kChannelClass,
                                            history.channel));
  }
  int64_t left = history.limit.value_or(INT64_MAX);
  int64_t last = history.after.value_or(0);
  auto printBatch = [&] {
    for (const Message& m : reader.read(last, left)) {
      printMessage(m, options.json);
      last = m.id;
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
