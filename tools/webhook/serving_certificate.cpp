#include "serving_certificate.hpp"

#include <cstdio>
#include <utility>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

namespace gpushare::webhook {

// The leaf certificate, the intermediates that followed it in the file, and the key.
struct ServingCertificate::Pair {
  X509* certificate = nullptr;
  STACK_OF(X509) * chain = nullptr;
  EVP_PKEY* key = nullptr;

  Pair() = default;
  Pair(const Pair&) = delete;
  Pair& operator=(const Pair&) = delete;
  ~Pair() {
    X509_free(certificate);
    sk_X509_pop_free(chain, X509_free);
    EVP_PKEY_free(key);
  }
};

namespace {

// OpenSSL's queued errors as one text (and the queue emptied), for messages.
std::string openssl_errors() {
  std::string text;
  while (const unsigned long code = ERR_get_error()) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof buffer);
    text += (text.empty() ? "" : "; ") + std::string(buffer);
  }
  return text.empty() ? "no PEM data" : text;
}

struct BioCloser {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
using BioHandle = std::unique_ptr<BIO, BioCloser>;

// "subject CN=..., valid until Dec  3 12:00:00 2027 GMT" for the log.
std::string describe(X509& certificate) {
  char subject[256];
  X509_NAME_oneline(X509_get_subject_name(&certificate), subject, sizeof subject);
  BioHandle text(BIO_new(BIO_s_mem()));
  std::string until;
  if (text && ASN1_TIME_print(text.get(), X509_get0_notAfter(&certificate)) == 1) {
    char* data = nullptr;
    const long size = BIO_get_mem_data(text.get(), &data);
    if (size > 0) until.assign(data, static_cast<std::size_t>(size));
  }
  return std::string("subject ") + subject + ", valid until " + until;
}

}  // namespace

bool ServingCertificate::FileVersion::operator==(const FileVersion& other) const {
  return device == other.device && inode == other.inode && size == other.size &&
         modified.tv_sec == other.modified.tv_sec && modified.tv_nsec == other.modified.tv_nsec;
}

ServingCertificate::ServingCertificate(std::string certificate_path, std::string key_path)
    : certificate_path_(std::move(certificate_path)), key_path_(std::move(key_path)) {}

ServingCertificate::~ServingCertificate() = default;

Result<std::shared_ptr<ServingCertificate::Pair>> ServingCertificate::read_pair() const {
  ERR_clear_error();
  auto pair = std::make_shared<Pair>();
  BioHandle certificates(BIO_new_file(certificate_path_.c_str(), "r"));
  if (!certificates) return Error{"cannot read --tls-cert " + certificate_path_ + ": " + openssl_errors()};
  pair->certificate = PEM_read_bio_X509(certificates.get(), nullptr, nullptr, nullptr);
  if (pair->certificate == nullptr) {
    return Error{"--tls-cert " + certificate_path_ + " holds no PEM certificate: " + openssl_errors()};
  }
  pair->chain = sk_X509_new_null();
  while (X509* intermediate = PEM_read_bio_X509(certificates.get(), nullptr, nullptr, nullptr)) {
    sk_X509_push(pair->chain, intermediate);
  }
  ERR_clear_error();  // the end of the file ends the loop with an error

  BioHandle key(BIO_new_file(key_path_.c_str(), "r"));
  if (!key) return Error{"cannot read --tls-key " + key_path_ + ": " + openssl_errors()};
  pair->key = PEM_read_bio_PrivateKey(key.get(), nullptr, nullptr, nullptr);
  if (pair->key == nullptr) return Error{"--tls-key " + key_path_ + " holds no PEM private key: " + openssl_errors()};
  if (X509_check_private_key(pair->certificate, pair->key) != 1) {
    ERR_clear_error();
    return Error{"--tls-key " + key_path_ + " is not the key of the certificate in --tls-cert " + certificate_path_};
  }
  return pair;
}

// Updates the versions to the files' present ones; true when one differs. A file that cannot be
// examined counts as changed (the read that follows says why).
bool ServingCertificate::files_changed(FileVersion& certificate, FileVersion& key) const {
  auto version_of = [](const std::string& path) {
    struct stat status {};
    FileVersion version;
    if (::stat(path.c_str(), &status) != 0) return version;
    version.device = status.st_dev;
    version.inode = status.st_ino;
    version.size = status.st_size;
    version.modified = status.st_mtim;
    return version;
  };
  const FileVersion new_certificate = version_of(certificate_path_);
  const FileVersion new_key = version_of(key_path_);
  const bool changed = !(new_certificate == certificate) || !(new_key == key) || new_certificate.inode == 0;
  certificate = new_certificate;
  key = new_key;
  return changed;
}

Status ServingCertificate::load() {
  const std::lock_guard lock(mutex_);
  files_changed(certificate_version_, key_version_);
  auto pair = read_pair();
  if (!pair) return pair.error();
  current_ = std::move(pair).value();
  std::fprintf(stderr, "gpushare webhook: serving the certificate in %s (%s)\n", certificate_path_.c_str(),
               describe(*current_->certificate).c_str());
  return Ok{};
}

void ServingCertificate::attach(SSL_CTX& context) { SSL_CTX_set_cert_cb(&context, &on_handshake, this); }

int ServingCertificate::on_handshake(SSL* ssl, void* self) {
  return static_cast<ServingCertificate*>(self)->use_current(*ssl) ? 1 : 0;
}

bool ServingCertificate::use_current(SSL& ssl) {
  const std::lock_guard lock(mutex_);
  if (files_changed(certificate_version_, key_version_)) {
    auto pair = read_pair();
    if (pair) {
      current_ = std::move(pair).value();
      std::fprintf(stderr, "gpushare webhook: the certificate changed: serving %s (%s)\n", certificate_path_.c_str(),
                   describe(*current_->certificate).c_str());
    } else {
      std::fprintf(stderr, "gpushare webhook: keeping the previous certificate: %s\n", pair.error().message.c_str());
    }
  }
  if (!current_) return false;
  return SSL_use_cert_and_key(&ssl, current_->certificate, current_->key, current_->chain, 1) == 1;
}

}  // namespace gpushare::webhook
