import { chooseAccel } from "../../lib/hypervisor/accel";

const probe = (kvmWritable: boolean, flags: string) => ({
  kvmWritable: () => kvmWritable,
  cpuinfo: () => `flags\t\t: fpu ${flags} sse2\n`,
});

test("KVM only with a writable /dev/kvm and vmx or svm", () => {
  expect(chooseAccel(probe(true, "vmx")).accel).toBe("kvm");
  expect(chooseAccel(probe(true, "svm")).accel).toBe("kvm");
  expect(chooseAccel(probe(false, "vmx"))).toMatchObject({
    accel: "tcg",
    reason: expect.stringMatching(/not writable/),
  });
  // paravirtual /dev/kvm: writable, but no virtualization flags
  expect(chooseAccel(probe(true, "hypervisor"))).toMatchObject({
    accel: "tcg",
    reason: expect.stringMatching(/no vmx\/svm/),
  });
  // a flag that merely contains the letters does not count
  expect(chooseAccel(probe(true, "vmxnope")).accel).toBe("tcg");
});

test("this machine's choice comes with a reason", () => {
  const c = chooseAccel();
  expect(["kvm", "tcg"]).toContain(c.accel);
  expect(c.reason).toMatch(c.accel === "kvm" ? /KVM/ : /TCG/);
});
