// The webhook's TLS certificate and key, read from files that cert-manager (or kubelet updating a
// mounted Secret) replaces while the server runs. Every TLS handshake asks for the pair: when
// either file changed since it was read (device, inode, size or mtime), both are read again, and
// the new pair serves this and later connections. A pair that does not load (a key that does not
// match the certificate while only one file has been replaced yet) is not used: the previous one
// keeps serving and the files are read again at the next handshake.
#pragma once

#include <sys/stat.h>

#include <memory>
#include <mutex>
#include <string>

#include <openssl/ssl.h>

#include "core/result.hpp"

namespace gpushare::webhook {

class ServingCertificate {
 public:
  ServingCertificate(std::string certificate_path, std::string key_path);
  ~ServingCertificate();
  ServingCertificate(const ServingCertificate&) = delete;
  ServingCertificate& operator=(const ServingCertificate&) = delete;

  // The first read: an Error says why the files cannot serve (the server does not start then).
  Status load();
  // Makes `context` ask this object for the certificate at each handshake. REQUIRES: load() ok.
  void attach(SSL_CTX& context);

 private:
  struct Pair;
  struct FileVersion {
    dev_t device = 0;
    ino_t inode = 0;
    off_t size = 0;
    timespec modified{};
    bool operator==(const FileVersion& other) const;
  };
  static int on_handshake(SSL* ssl, void* self);
  bool use_current(SSL& ssl);
  Result<std::shared_ptr<Pair>> read_pair() const;
  bool files_changed(FileVersion& certificate, FileVersion& key) const;

  const std::string certificate_path_;
  const std::string key_path_;
  std::mutex mutex_;
  std::shared_ptr<Pair> current_;    // guarded by mutex_
  FileVersion certificate_version_;  // guarded by mutex_: of the files current_ (or a failed read) came from
  FileVersion key_version_;          // guarded by mutex_
};

}  // namespace gpushare::webhook
