// SqlCursor and SqlRow lifetimes: what can be kept from a temporary cursor works, and what
// would dangle does not compile (checked here at compile time; the runtime cases run under
// ASan in the sanitized build).
#include <doctest/doctest.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "dohost/storage.h"

namespace dohost::testing {
namespace {

// What a two-row `SELECT name, n` gives; long texts so a dangling read is a heap read.
SqlCursor twoRows() {
  SqlResult r;
  r.columns = {"name", "n"};
  r.rows.push_back({std::string(64, 'a'), int64_t{1}});
  r.rows.push_back({std::string(64, 'b'), int64_t{2}});
  r.rowsRead = 2;
  return SqlCursor(std::move(r));
}

SqlCursor oneRow(std::string text) {
  SqlResult r;
  r.columns = {"t", "blob", "nothing"};
  r.rows.push_back({std::move(text), Blob{"\x01\x02"}, nullptr});
  return SqlCursor(std::move(r));
}

// The accessors that return references exist for lvalues, hand values over from non-const
// temporaries, and are deleted on const temporaries.
template <typename T>
concept TextOnIndex = requires(T&& t) { std::forward<T>(t).text(size_t{0}); };
template <typename T>
concept IndexByNumber = requires(T&& t) { std::forward<T>(t)[size_t{0}]; };
template <typename T>
concept IndexByName = requires(T&& t) { std::forward<T>(t)[std::string_view("n")]; };
template <typename T>
concept OneRow = requires(T&& t) { std::forward<T>(t).one(); };
template <typename T>
concept RowAt = requires(T&& t) { std::forward<T>(t).row(size_t{0}); };
template <typename T>
concept BeginEnd = requires(T&& t) {
  std::forward<T>(t).begin();
  std::forward<T>(t).end();
};

static_assert(TextOnIndex<SqlRow&> && TextOnIndex<const SqlRow&> && TextOnIndex<SqlRow>);
static_assert(!TextOnIndex<const SqlRow>);
static_assert(IndexByNumber<const SqlRow&> && IndexByNumber<SqlRow> && !IndexByNumber<const SqlRow>);
static_assert(IndexByName<const SqlRow&> && IndexByName<SqlRow> && !IndexByName<const SqlRow>);
static_assert(OneRow<const SqlCursor&> && OneRow<SqlCursor> && !OneRow<const SqlCursor>);
static_assert(RowAt<const SqlCursor&> && RowAt<SqlCursor> && !RowAt<const SqlCursor>);
static_assert(BeginEnd<const SqlCursor&> && !BeginEnd<SqlCursor> && !BeginEnd<const SqlCursor>);

// From an lvalue, references into the cursor; from a temporary, values.
static_assert(std::is_same_v<decltype(std::declval<const SqlCursor&>().one()), const SqlRow&>);
static_assert(std::is_same_v<decltype(std::declval<SqlCursor>().one()), SqlRow>);
static_assert(std::is_same_v<decltype(std::declval<SqlCursor>().row(0)), SqlRow>);
static_assert(std::is_same_v<decltype(std::declval<const SqlRow&>().text(0)), const std::string&>);
static_assert(std::is_same_v<decltype(std::declval<SqlRow>().text(0)), std::string>);
static_assert(std::is_same_v<decltype(std::declval<SqlRow>()[0]), SqlValue>);
static_assert(std::is_same_v<decltype(std::declval<SqlCursor>().columnNames()),
                             std::vector<std::string>>);
static_assert(std::is_same_v<decltype(*std::declval<const SqlCursor&>().begin()), const SqlRow&>);

// Rows are plain values; only the runtime (SqlCursor) makes them.
static_assert(std::is_copy_constructible_v<SqlRow> && std::is_nothrow_move_constructible_v<SqlRow>);
static_assert(!std::is_default_constructible_v<SqlRow>);
static_assert(!std::is_constructible_v<SqlRow, std::vector<SqlValue>>);

// An Sql that answers every statement with the rows of `users` (name, id), so the lifetimes
// below are those of real exec() results.
class UsersSql final : public Sql {
 public:
  SqlCursor execParams(std::string_view query, const std::vector<SqlValue>& params) override {
    SqlResult r;
    if (query.starts_with("SELECT count(*)")) {
      r.columns = {"count(*)"};
      r.rows.push_back({int64_t{2}});
    } else {
      r.columns = {"name"};
      for (const char* name : {"ann-with-a-long-name-on-the-heap", "bob-with-a-long-name-on-the-heap"}) {
        if (params.empty() || std::get<int64_t>(params[0]) == (name[0] == 'a' ? 1 : 2)) {
          r.rows.push_back({std::string(name)});
        }
      }
    }
    return SqlCursor(std::move(r));
  }
  int64_t databaseSize() override { return 0; }
};

}  // namespace

TEST_CASE("what docs/api.md shows of temporary cursors works") {
  UsersSql users;
  Sql& sql = users;
  std::vector<std::string> names;
  // [doc:temporaries]
  SqlRow row = sql.exec("SELECT name FROM users WHERE id = ?", 1).one();  // the row is kept
  const std::string& name = sql.exec("SELECT name FROM users WHERE id = ?", 2).one().text(0);
  int64_t count = sql.exec("SELECT count(*) FROM users").one().integer(0);
  for (const SqlRow& r : sql.exec("SELECT name FROM users")) names.push_back(r.text(0));

  SqlCursor all = sql.exec("SELECT name FROM users");  // a cursor kept: rows read in place
  const SqlRow& first = all.row(0);
  std::string_view firstName = first.text(0);  // valid while `all` lives
  // [/doc:temporaries]
  CHECK(row.text(0) == "ann-with-a-long-name-on-the-heap");
  CHECK(name == "bob-with-a-long-name-on-the-heap");
  CHECK(count == 2);
  CHECK(names == std::vector<std::string>{row.text(0), name});
  CHECK(firstName == row.text(0));
}

TEST_CASE("a row taken from a temporary cursor keeps its values") {
  SqlRow row = oneRow(std::string(100, 'x')).one();
  CHECK(row.text(0) == std::string(100, 'x'));
  CHECK(row.text(1) == "\x01\x02");  // BLOB bytes
  CHECK(row.isNull(2));
  CHECK(row.columnNames() == std::vector<std::string>{"t", "blob", "nothing"});
  CHECK(row.text(0) == std::get<std::string>(row["t"]));
  SqlRow second = twoRows().row(1);
  CHECK(second.integer(1) == 2);
  CHECK(second.text(0) == std::string(64, 'b'));
}

TEST_CASE("references bound to a temporary row's parts live as long as the reference") {
  const std::string& t = oneRow(std::string(100, 'y')).one().text(0);
  const SqlValue& v = oneRow(std::string(100, 'v')).one()[0];
  const SqlValue& named = oneRow(std::string(100, 'n')).one()["t"];
  const SqlRow& row = oneRow(std::string(100, 'r')).one();
  std::string copied = oneRow(std::string(100, 'c')).one().text(0);
  CHECK(t == std::string(100, 'y'));
  CHECK(std::get<std::string>(v) == std::string(100, 'v'));
  CHECK(std::get<std::string>(named) == std::string(100, 'n'));
  CHECK(row.text(0) == std::string(100, 'r'));
  CHECK(copied == std::string(100, 'c'));
  const std::vector<std::string>& columns = twoRows().columnNames();
  CHECK(columns == std::vector<std::string>{"name", "n"});
}

TEST_CASE("rows of a live cursor are read in place, with no copy") {
  SqlCursor c = twoRows();
  const SqlRow& first = c.row(0);
  CHECK(&first == &c.row(0));
  std::string_view name = c.row(1).text(0);  // a view into the cursor, valid while it lives
  CHECK(name == std::string(64, 'b'));
  int64_t sum = 0;
  for (const SqlRow& row : c) sum += row.integer(1);
  CHECK(sum == 3);
  CHECK(c.rowsRead() == 2);
}

TEST_CASE("a loop over a temporary cursor keeps it for the whole loop") {
  std::vector<std::string> names;
  for (const SqlRow& row : twoRows()) names.push_back(row.text(0));
  CHECK(names == std::vector<std::string>{std::string(64, 'a'), std::string(64, 'b')});
}

TEST_CASE("one() refuses anything but exactly one row, from a cursor or a temporary") {
  SqlCursor two = twoRows();
  CHECK_THROWS_AS(two.one(), SqlError);
  CHECK_THROWS_AS(twoRows().one(), SqlError);
  CHECK_THROWS_AS(SqlCursor(SqlResult{}).one(), SqlError);
  CHECK_THROWS_AS(oneRow("x").one().integer(0), SqlError);  // TEXT is not an integer
  CHECK_THROWS_AS(oneRow("x").one()["missing"], SqlError);
  CHECK_THROWS_AS(twoRows().row(2), std::out_of_range);
}

TEST_CASE("a copy of a cursor outlives the original and shares nothing it could lose") {
  std::optional<SqlCursor> original(twoRows());
  SqlCursor copy = *original;
  const SqlRow& kept = copy.row(0);
  original.reset();
  CHECK(kept.text(0) == std::string(64, 'a'));
  CHECK(kept.columnNames() == std::vector<std::string>{"name", "n"});
  CHECK(copy.size() == 2);
}

}  // namespace dohost::testing
