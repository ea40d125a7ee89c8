// `kvx status`: per sweep, how many jobs are done / running / failed / pending, the failed
// jobs' errors, and an ETA from the throughput of the last 15 minutes. Read-only.
#pragma once
#include <optional>
#include <string>

namespace kvx::report {

std::string sweep_status(const std::string& db, const std::optional<std::string>& sweep, const std::string& format);

}  // namespace kvx::report
