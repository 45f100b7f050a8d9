/*
 * host-announce: claims a paused VM's MAC for this host's Linux bridge, so that the network sends
 * the VM's frames here while it is paused (they wait in its tap until QEMU runs and reads them).
 * QEMU cannot do it: a paused QEMU queues its own announce (net/queue.c, qemu_can_send_packet)
 * until the VM runs, and every frame sent to the stopped source meanwhile is lost.
 *
 * Reads lines "<tap> <mac>" on stdin; for each, points the tap's bridge FDB entry for <mac> at the
 * tap (a dynamic entry, RTM_NEWNEIGH, as `bridge fdb replace <mac> dev <tap> master dynamic`), then
 * floods a RARP from <mac> out of the bridge (QEMU's own announce frame) so every switch beyond it
 * learns the MAC here. Answers "ok <tap> <mac>" or "err <tap> <mac> <reason>" per line.
 * Needs CAP_NET_ADMIN and CAP_NET_RAW in the bridge's network namespace. Built by lib/net/host-announcer.ts.
 */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static char reason[256];

static int fail(const char *what) {
  snprintf(reason, sizeof reason, "%s: %s", what, strerror(errno));
  return -1;
}

static int parse_mac(const char *text, unsigned char mac[6]) {
  unsigned int b[6];
  char extra;
  if (sscanf(text, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &extra) != 6) return -1;
  for (int i = 0; i < 6; i++) mac[i] = (unsigned char)b[i];
  return 0;
}

/* The bridge the tap is a port of, from sysfs; -1 when it is not in a Linux bridge. */
static int bridge_of(const char *tap, char bridge[IF_NAMESIZE]) {
  char link[PATH_MAX], target[PATH_MAX], probe[PATH_MAX];
  snprintf(link, sizeof link, "/sys/class/net/%s/master", tap);
  ssize_t n = readlink(link, target, sizeof target - 1);
  if (n < 0) {
    snprintf(reason, sizeof reason, "%s is not a port of a bridge", tap);
    return -1;
  }
  target[n] = 0;
  snprintf(bridge, IF_NAMESIZE, "%s", basename(target));
  snprintf(probe, sizeof probe, "/sys/class/net/%s/bridge", bridge);
  if (access(probe, F_OK) != 0) {
    snprintf(reason, sizeof reason, "%s's master %s is not a Linux bridge", tap, bridge);
    return -1;
  }
  return 0;
}

static int fdb_replace(int nl, int tap_index, const unsigned char mac[6]) {
  struct {
    struct nlmsghdr nh;
    struct ndmsg nd;
    struct rtattr attr;
    unsigned char lladdr[8];
  } req;
  memset(&req, 0, sizeof req);
  req.nh.nlmsg_len = NLMSG_LENGTH(sizeof req.nd) + RTA_LENGTH(6);
  req.nh.nlmsg_type = RTM_NEWNEIGH;
  req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
  req.nd.ndm_family = AF_BRIDGE;
  req.nd.ndm_ifindex = tap_index;
  req.nd.ndm_state = NUD_REACHABLE; /* dynamic: it ages and moves again when the VM leaves */
  req.nd.ndm_flags = NTF_MASTER;
  req.attr.rta_type = NDA_LLADDR;
  req.attr.rta_len = RTA_LENGTH(6);
  memcpy(req.lladdr, mac, 6);
  if (send(nl, &req, req.nh.nlmsg_len, 0) < 0) return fail("netlink send");
  char answer[4096];
  ssize_t n = recv(nl, answer, sizeof answer, 0);
  if (n < 0) return fail("netlink recv");
  struct nlmsghdr *h = (struct nlmsghdr *)answer;
  if (n >= (ssize_t)NLMSG_LENGTH(sizeof(struct nlmsgerr)) && h->nlmsg_type == NLMSG_ERROR) {
    int code = -((struct nlmsgerr *)NLMSG_DATA(h))->error;
    if (code != 0) {
      errno = code;
      return fail("bridge fdb replace");
    }
  }
  return 0;
}

/* QEMU's announce frame (net/announce.c announce_self_create): a RARP request from the MAC. */
static int send_rarp(int raw, int bridge_index, const unsigned char mac[6]) {
  unsigned char frame[60];
  memset(frame, 0, sizeof frame);
  memset(frame, 0xff, 6);
  memcpy(frame + 6, mac, 6);
  frame[12] = 0x80, frame[13] = 0x35;             /* ETH_P_RARP */
  frame[14] = 0x00, frame[15] = 0x01;             /* hardware type: Ethernet */
  frame[16] = 0x08, frame[17] = 0x00;             /* protocol type: IPv4 */
  frame[18] = 6, frame[19] = 4;                   /* address lengths */
  frame[20] = 0x00, frame[21] = 0x03;             /* opcode: reverse request */
  memcpy(frame + 22, mac, 6);                     /* sender MAC, sender IP 0 */
  memcpy(frame + 32, mac, 6);                     /* target MAC, target IP 0 */
  struct sockaddr_ll to;
  memset(&to, 0, sizeof to);
  to.sll_family = AF_PACKET;
  to.sll_ifindex = bridge_index;
  to.sll_halen = 6;
  memset(to.sll_addr, 0xff, 6);
  if (sendto(raw, frame, sizeof frame, 0, (struct sockaddr *)&to, sizeof to) < 0) return fail("RARP send");
  return 0;
}

static int claim(int nl, int raw, const char *tap, const char *mac_text) {
  unsigned char mac[6];
  char bridge[IF_NAMESIZE];
  if (parse_mac(mac_text, mac) != 0) {
    snprintf(reason, sizeof reason, "not a MAC address: %s", mac_text);
    return -1;
  }
  int tap_index = (int)if_nametoindex(tap);
  if (tap_index == 0) return fail(tap);
  if (bridge_of(tap, bridge) != 0) return -1;
  int bridge_index = (int)if_nametoindex(bridge);
  if (bridge_index == 0) return fail(bridge);
  /* the FDB first: frames the RARP draws here must find the tap, not the uplink that had the MAC */
  if (fdb_replace(nl, tap_index, mac) != 0) return -1;
  return send_rarp(raw, bridge_index, mac);
}

int main(void) {
  int nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  int raw = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
  if (nl < 0 || raw < 0) {
    fail("socket");
    printf("fatal %s\n", reason);
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  char line[256], tap[IF_NAMESIZE + 1], mac[32];
  while (fgets(line, sizeof line, stdin)) {
    if (sscanf(line, "%16s %31s", tap, mac) != 2) {
      printf("err - - expected \"<tap> <mac>\"\n");
    } else if (claim(nl, raw, tap, mac) == 0) {
      printf("ok %s %s\n", tap, mac);
    } else {
      printf("err %s %s %s\n", tap, mac, reason);
    }
    fflush(stdout);
  }
  return 0;
}
