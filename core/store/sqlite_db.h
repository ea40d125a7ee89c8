// Thin RAII layer over the SQLite C API for the store: one connection, prepared statements
// with bound parameters (user strings never enter SQL text), and BEGIN IMMEDIATE transactions
// that retry while another process holds the write lock. Errors become kvx::Error naming the
// database file.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

struct sqlite3;
struct sqlite3_stmt;

namespace kvx::sql {

class Db;

class Stmt {
 public:
  Stmt(Db& db, const char* sql);
  ~Stmt();
  Stmt(Stmt&& o) noexcept;
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  // Parameters are 1-based as in SQLite.
  Stmt& bind(int i, int64_t v);
  Stmt& bind(int i, int v) { return bind(i, static_cast<int64_t>(v)); }
  Stmt& bind(int i, double v);
  Stmt& bind(int i, const std::string& v);
  Stmt& bind(int i, const char* v) { return bind(i, std::string(v)); }
  Stmt& bind_null(int i);
  template <typename... A>
  Stmt& bind_all(const A&... a) {
    int i = 0;
    (bind(++i, a), ...);
    return *this;
  }

  bool step();  // true while a row is available
  void run();   // step to completion (statements that return no rows)
  void reset();

  bool is_null(int col) const;
  int64_t int64(int col) const;
  double real(int col) const;
  std::string text(int col) const;  // "" for NULL

 private:
  Db* db_;
  sqlite3_stmt* st_ = nullptr;
};

class Db {
 public:
  // read_only opens an existing file without creating or changing it.
  Db(const std::string& path, bool read_only);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  // Fixed SQL only (schema, pragmas); anything carrying user data goes through Stmt.
  void exec(const char* sql);
  Stmt prepare(const char* sql) { return Stmt(*this, sql); }
  int64_t changes() const;
  int64_t last_insert_rowid() const;
  const std::string& path() const { return path_; }
  sqlite3* handle() const { return db_; }
  [[noreturn]] void fail(int rc, const std::string& what) const;

  // Runs fn between BEGIN IMMEDIATE and COMMIT (ROLLBACK when fn throws). BEGIN is retried
  // on SQLITE_BUSY beyond the busy timeout so that many workers never give up on a claim.
  void immediate(const std::function<void()>& fn);

 private:
  sqlite3* db_ = nullptr;
  std::string path_;
};

}  // namespace kvx::sql
