/** The error type of every layer; defined in nrdl/ (the bottom layer, whose parser throws it too). */
export { TeleportError } from "../nrdl/errors";
