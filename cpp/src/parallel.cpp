// The fork guard of parallel.hpp: a pthread_atfork child handler that makes a forked
// child run every kernel on its calling thread.
#include "deepoptim/parallel.hpp"

#include <pthread.h>

#include <atomic>

namespace deepoptim::parallel {
namespace {

std::atomic<bool> threads_started{false};
std::atomic<bool> forked_child{false};

void on_fork_child() {
  if (threads_started.load(std::memory_order_relaxed)) forked_child.store(true, std::memory_order_relaxed);
}

// Installed once when the library is loaded (static initialization of this translation
// unit, which the kernels reference through in_forked_child).
const bool installed = [] {
  pthread_atfork(nullptr, nullptr, &on_fork_child);
  return true;
}();

}  // namespace

void note_threads_started() noexcept {
  if (!threads_started.load(std::memory_order_relaxed)) threads_started.store(true, std::memory_order_relaxed);
}

bool in_forked_child() noexcept {
  (void)installed;
  return forked_child.load(std::memory_order_relaxed);
}

}  // namespace deepoptim::parallel
