/**
 * KVM only where it really works: /dev/kvm writable AND the CPU shows vmx or svm. On machines
 * whose /dev/kvm is paravirtual (PVM) a stock guest kernel hangs under KVM, so TCG it is there.
 */
import fs from "node:fs";

export type Accel = "kvm" | "tcg";

export interface AccelChoice {
  accel: Accel;
  /** Why, in words for the log. */
  reason: string;
}

export interface AccelProbe {
  kvmWritable(): boolean;
  cpuinfo(): string;
}

const hostProbe: AccelProbe = {
  kvmWritable() {
    try {
      fs.accessSync("/dev/kvm", fs.constants.R_OK | fs.constants.W_OK);
      return true;
    } catch {
      return false;
    }
  },
  cpuinfo() {
    try {
      return fs.readFileSync("/proc/cpuinfo", "utf8");
    } catch {
      return "";
    }
  },
};

export function chooseAccel(probe: AccelProbe = hostProbe): AccelChoice {
  if (!probe.kvmWritable())
    return { accel: "tcg", reason: "/dev/kvm missing or not writable: using TCG (slow, but works)" };
  if (!/\b(vmx|svm)\b/.test(probe.cpuinfo()))
    return { accel: "tcg", reason: "/dev/kvm present but the CPU shows no vmx/svm (paravirtual KVM): using TCG" };
  return { accel: "kvm", reason: "/dev/kvm writable and the CPU has vmx/svm: using KVM" };
}
