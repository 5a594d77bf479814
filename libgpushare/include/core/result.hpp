// Error values for the core library. The core never throws across its interface: a caller that
// sits behind the C boundary of the preload library must be able to turn every failure into a
// driver status code, so failures travel as values carrying a message meant for a person.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace gpushare {

struct Error {
  std::string message;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : data_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(Error error) : data_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  [[nodiscard]] bool ok() const { return std::holds_alternative<T>(data_); }
  explicit operator bool() const { return ok(); }

  // REQUIRES: ok()
  T& value() & { return std::get<T>(data_); }
  const T& value() const& { return std::get<T>(data_); }
  T&& value() && { return std::get<T>(std::move(data_)); }
  T* operator->() { return &value(); }
  T& operator*() & { return value(); }

  // REQUIRES: !ok()
  [[nodiscard]] const Error& error() const { return std::get<Error>(data_); }

 private:
  std::variant<T, Error> data_;
};

struct Ok {};
using Status = Result<Ok>;

}  // namespace gpushare
