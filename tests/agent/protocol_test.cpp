// The agent's wire format: every message survives a round trip, and every malformed header or
// payload is refused with an Error, never read past.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "protocol.hpp"

namespace gpushare::agent {
namespace {

std::vector<Message> one_of_each() {
  return {Hello{ClientKind::kTool, kProtocolVersion},
          Welcome{true, "train", PeerCredentials{4242, 1000, 100}},
          Welcome{false, "no policy rule matches uid 1000", PeerCredentials{-1, 0, 0}},
          Ping{0x0123456789abcdefull},
          Pong{7},
          ErrorMessage{ErrorCode::kPermissionDenied, "permission denied"},
          AdminRequest{"check"},
          AdminReply{""},
          Hello{ClientKind::kAdministrator, kProtocolVersion},
          QuotaSet{"train", 1ull << 30, std::nullopt, std::nullopt, std::nullopt},
          QuotaSet{"night-team", std::nullopt, 50, 0, 2},
          QuotaSet{"all", 0, 100, 100, 0},
          PolicyReload{},
          Join{30, 0, kNoPriorityWish},
          Join{100, 50, 2},
          Joined{511, 127, "train", 70, 0, 1},
          AttachGpu{{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, 3, 80ull << 30, 1ull << 30, "NVIDIA H200"},
          GpuAttached{15, UINT64_MAX},
          Lease{0, 2ull << 20},
          LeaseReply{1, true},
          LeaseReply{1, false},
          LeaseTrim{2},
          SliceWanted{3},
          SliceDone{4, 0xfffffffeu, 123456789ull},
          SliceRenew{5},
          Rejoin{7, 9}};
}

void put_u32(std::string& bytes, std::size_t offset, std::uint32_t value) {
  for (int i = 0; i < 4; ++i) bytes[offset + i] = static_cast<char>((value >> (8 * i)) & 0xff);
}
void put_u16(std::string& bytes, std::size_t offset, std::uint16_t value) {
  for (int i = 0; i < 2; ++i) bytes[offset + i] = static_cast<char>((value >> (8 * i)) & 0xff);
}

TEST(AgentProtocol, EveryMessageRoundTrips) {
  for (const Message& message : one_of_each()) {
    const std::string bytes = encode(message);
    auto frame = decode_frame(bytes);
    ASSERT_TRUE(frame) << frame.error().message;
    ASSERT_TRUE(frame->has_value()) << message_type_name(message_type(message));
    EXPECT_EQ((*frame)->consumed_bytes, bytes.size());
    EXPECT_EQ((*frame)->message, message) << message_type_name(message_type(message));
  }
}

TEST(AgentProtocol, SeveralMessagesInOneStreamAreTakenInTurn) {
  std::string stream = encode(Ping{1}) + encode(AdminRequest{"check"}) + encode(Ping{2});
  std::vector<Message> taken;
  while (!stream.empty()) {
    auto frame = decode_frame(stream);
    ASSERT_TRUE(frame && frame->has_value());
    taken.push_back((*frame)->message);
    stream.erase(0, (*frame)->consumed_bytes);
  }
  EXPECT_EQ(taken, (std::vector<Message>{Ping{1}, AdminRequest{"check"}, Ping{2}}));
}

TEST(AgentProtocol, EveryPrefixOfAMessageIsIncompleteNotAnError) {
  const std::string bytes = encode(Welcome{true, "tenant", PeerCredentials{1, 2, 3}});
  for (std::size_t length = 0; length < bytes.size(); ++length) {
    auto frame = decode_frame(std::string_view(bytes).substr(0, length));
    ASSERT_TRUE(frame) << "prefix of " << length << ": " << frame.error().message;
    EXPECT_FALSE(frame->has_value()) << length;
  }
}

TEST(AgentProtocol, GarbageIsRefusedFromItsFirstByte) {
  EXPECT_FALSE(decode_frame("X"));
  EXPECT_FALSE(decode_frame("GE"));  // "GPSA" is the magic on the wire: the second byte is already wrong
  EXPECT_FALSE(decode_frame("GET / HTTP/1.1\r\n\r\n"));
  std::string bad_magic = encode(Ping{1});
  bad_magic[3] = 'X';
  EXPECT_FALSE(decode_frame(bad_magic));
}

TEST(AgentProtocol, EveryMalformedHeaderIsRefused) {
  const std::string ping = encode(Ping{1});
  std::string wrong_version = ping;
  put_u16(wrong_version, 4, kFrameVersion + 1);
  std::string type_zero = ping;
  put_u16(type_zero, 6, 0);
  std::string unknown_type = ping;
  put_u16(unknown_type, 6, 99);
  std::string over_maximum = ping;
  put_u32(over_maximum, 8, static_cast<std::uint32_t>(kMaxPayloadBytes + 1));
  std::string huge = ping;
  put_u32(huge, 8, 0xffffffffu);
  for (const std::string& bytes : {wrong_version, type_zero, unknown_type, over_maximum, huge}) {
    EXPECT_FALSE(decode_header(bytes));
    // Refused from the header alone, before any payload could arrive.
    EXPECT_FALSE(decode_frame(std::string_view(bytes).substr(0, kHeaderBytes)));
  }
  EXPECT_FALSE(decode_header("short"));
}

TEST(AgentProtocol, PayloadLengthsThatDoNotFitTheTypeAreRefused) {
  std::string ping = encode(Ping{1});
  // A Ping whose header says 4 payload bytes: too short for its nonce.
  std::string short_ping = ping.substr(0, kHeaderBytes + 4);
  put_u32(short_ping, 8, 4);
  EXPECT_FALSE(decode_frame(short_ping));
  // One byte more than the nonce: left over.
  std::string long_ping = ping + "x";
  put_u32(long_ping, 8, 9);
  EXPECT_FALSE(decode_frame(long_ping));
}

TEST(AgentProtocol, FieldsOutOfRangeAreRefused) {
  std::string hello = encode(Hello{ClientKind::kTenant, kProtocolVersion});
  hello[kHeaderBytes] = 9;  // no such client kind
  EXPECT_FALSE(decode_frame(hello));

  std::string welcome = encode(Welcome{true, "t", {}});
  welcome[kHeaderBytes] = 2;  // accepted is neither 0 nor 1
  EXPECT_FALSE(decode_frame(welcome));

  std::string error = encode(ErrorMessage{ErrorCode::kMalformed, "x"});
  put_u16(error, kHeaderBytes, 0);
  EXPECT_FALSE(decode_frame(error));

  // A string whose length runs past the payload.
  std::string request = encode(AdminRequest{"check"});
  put_u16(request, kHeaderBytes, 200);
  EXPECT_FALSE(decode_frame(request));

  // A string holding a NUL byte.
  std::string with_nul = encode(AdminRequest{"abc"});
  with_nul[kHeaderBytes + 3] = '\0';
  EXPECT_FALSE(decode_frame(with_nul));
}

// A tenant's messages name GPU records of the state's table, shares in percent and priority classes:
// anything else is refused before it reaches the agent's sessions or arbiter.
TEST(AgentProtocol, TenantFieldsOutOfRangeAreRefused) {
  for (const Message& naming_a_gpu : std::vector<Message>{Lease{0, 1}, LeaseReply{0, true}, LeaseTrim{0},
                                                          SliceWanted{0}, SliceDone{0, 0, 0}, SliceRenew{0},
                                                          GpuAttached{0, 0}}) {
    std::string bytes = encode(naming_a_gpu);
    put_u32(bytes, kHeaderBytes, kMaxGpuRecords);
    EXPECT_FALSE(decode_frame(bytes)) << message_type_name(message_type(naming_a_gpu));
  }
  std::string share = encode(Join{30, 0, kNoPriorityWish});
  put_u32(share, kHeaderBytes, 101);
  EXPECT_FALSE(decode_frame(share));
  std::string priority = encode(Join{30, 0, kNoPriorityWish});
  priority[kHeaderBytes + 8] = 3;
  EXPECT_FALSE(decode_frame(priority));
  std::string joined = encode(Joined{1, 1, "t", 0, 0, 1});
  joined[kHeaderBytes + 16] = static_cast<char>(kNoPriorityWish);  // only a wish may leave it out
  EXPECT_FALSE(decode_frame(joined));
  std::string granted = encode(LeaseReply{0, true});
  granted[kHeaderBytes + 4] = 2;
  EXPECT_FALSE(decode_frame(granted));
}

TEST(AgentProtocol, AnUnsupportedHelloVersionStillDecodesSoItCanBeAnswered) {
  auto frame = decode_frame(encode(Hello{ClientKind::kTenant, 9}));
  ASSERT_TRUE(frame && frame->has_value());
  EXPECT_EQ(std::get<Hello>((*frame)->message).protocol_version, 9);
}

TEST(AgentProtocol, OverlongTextIsCutToFitThePayload) {
  const std::string bytes = encode(AdminReply{std::string(3 * kMaxPayloadBytes, 'a')});
  EXPECT_LE(bytes.size(), kMaxMessageBytes);
  auto frame = decode_frame(bytes);
  ASSERT_TRUE(frame && frame->has_value());
}

// Random and mutated bytes: the decoder answers each with a message, "incomplete" or an Error,
// and a message never claims more bytes than it was given.
TEST(AgentProtocol, RandomAndMutatedBytesNeverReadPastTheInput) {
  std::mt19937 random(13);
  const std::vector<Message> messages = one_of_each();
  for (int round = 0; round < 20000; ++round) {
    std::string bytes = encode(messages[random() % messages.size()]);
    switch (random() % 4) {
      case 0: bytes[random() % bytes.size()] = static_cast<char>(random()); break;
      case 1: bytes.resize(random() % bytes.size()); break;
      case 2: bytes += static_cast<char>(random()); break;
      default:
        bytes.resize(random() % 64);
        for (char& byte : bytes) byte = static_cast<char>(random());
    }
    auto frame = decode_frame(bytes);
    if (frame && frame->has_value()) {
      EXPECT_LE((*frame)->consumed_bytes, bytes.size());
    }
  }
}

// The typed admin requests take 20..29 only; their decoders refuse what a sender could not mean.
TEST(AgentProtocol, AdminRequestsAreNumberedApartAndKnownAsAdministration) {
  EXPECT_EQ(static_cast<int>(MessageType::kQuotaSet), 20);
  EXPECT_EQ(static_cast<int>(MessageType::kPolicyReload), 21);
  EXPECT_TRUE(is_admin_message(MessageType::kAdminRequest));
  EXPECT_TRUE(is_admin_message(MessageType::kQuotaSet));
  EXPECT_TRUE(is_admin_message(MessageType::kPolicyReload));
  EXPECT_FALSE(is_admin_message(MessageType::kJoin));
  EXPECT_FALSE(is_admin_message(MessageType::kLease));
  std::string unknown = encode(PolicyReload{});
  put_u16(unknown, 6, 22);
  EXPECT_FALSE(decode_frame(unknown));
}

TEST(AgentProtocol, MalformedQuotaSetIsRefused) {
  // Offsets in the payload: flags 0, memory 1, share 9, limit 13, priority 17, tenant 18.
  const std::string good = encode(QuotaSet{"t", 1, 2, 3, 1}).substr(kHeaderBytes);
  const auto refused = [](std::string payload) {
    return !decode_payload(MessageType::kQuotaSet, payload).ok();
  };
  ASSERT_FALSE(refused(good));
  std::string unknown_flag = good;
  unknown_flag[0] = static_cast<char>(0x1f);
  EXPECT_TRUE(refused(unknown_flag));
  std::string absent_but_set = encode(QuotaSet{"t", std::nullopt, 2, 3, 1}).substr(kHeaderBytes);
  absent_but_set[1] = 1;  // memory is not flagged, yet not 0
  EXPECT_TRUE(refused(absent_but_set));
  std::string share_zero = good;
  put_u32(share_zero, 9, 0);
  EXPECT_TRUE(refused(share_zero));
  std::string share_over = good;
  put_u32(share_over, 9, 101);
  EXPECT_TRUE(refused(share_over));
  std::string limit_over = good;
  put_u32(limit_over, 13, 101);
  EXPECT_TRUE(refused(limit_over));
  std::string priority_over = good;
  priority_over[17] = 3;
  EXPECT_TRUE(refused(priority_over));
  EXPECT_TRUE(refused(encode(QuotaSet{"", 1, {}, {}, {}}).substr(kHeaderBytes)));  // no tenant
  EXPECT_TRUE(refused(good.substr(0, good.size() - 1)));                          // tenant cut short
  EXPECT_TRUE(refused(good + "x"));                                                // bytes left over
  EXPECT_TRUE(refused(good.substr(0, 10)));
  EXPECT_FALSE(decode_payload(MessageType::kPolicyReload, "x").ok());
  EXPECT_TRUE(decode_payload(MessageType::kPolicyReload, "").ok());
  std::string bad_kind = encode(Hello{ClientKind::kAdministrator, kProtocolVersion}).substr(kHeaderBytes);
  bad_kind[0] = 4;
  EXPECT_FALSE(decode_payload(MessageType::kHello, bad_kind).ok());
}

}  // namespace
}  // namespace gpushare::agent
