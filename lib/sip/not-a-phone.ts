/** What every backend tells a caller who dialled sip-teleport like a phone (an INVITE with SDP, say). */
export const NOT_A_PHONE_REASON = "No Calls Here - Send a MESSAGE: migrate PLAN to URI";

/** The Warning's whole sentence: softphones show the reason phrase, this says what works instead. */
export const NOT_A_PHONE =
  "sip-teleport takes no calls: to migrate VMs send a text MESSAGE such as 'migrate exp2 to sip:dc2@10.10.10.67' " +
  "to this address (the outcome comes back as a MESSAGE); an INVITE must carry an NRDL offer (application/nrdl+xml)";
