// Minimal leveled logging to stderr. Level from the env var JAX_PCCL_LOG
// (error|warn|info|debug; default warn) so a dropped peer leaves a reason.
#pragma once
#include <sstream>
#include <string>

namespace pccl {

enum class LogLevel { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

bool log_enabled(LogLevel level);
void log_line(LogLevel level, const std::string& line);

}  // namespace pccl

#define PCCL_LOG(level, expr)                                  \
  do {                                                         \
    if (::pccl::log_enabled(::pccl::LogLevel::level)) {        \
      std::ostringstream pccl_log_os_;                         \
      pccl_log_os_ << expr;                                    \
      ::pccl::log_line(::pccl::LogLevel::level, pccl_log_os_.str()); \
    }                                                          \
  } while (0)
