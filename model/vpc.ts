// The virtual size qemu-img 7.2 gives a vpc (VHD) image it creates. Virtual PC sizes a disk by its
// CHS geometry (cylinders x heads x sectors per track), not by the byte count in the footer, so
// qemu's block/vpc.c (vpc_co_create_opts, calculate_rounded_image_size, calculate_geometry) grows
// a requested size until some geometry covers it, lest a converted image be cut short. With
// force_size=on it skips the geometry (writes the largest one, creator "qem2") and the image is the
// requested size in whole sectors, as the footer's current_size says.

const SECTOR = 512;
/** The largest CHS geometry, 65535 cylinders x 16 heads x 255 sectors per track (about 127 GiB):
 * a geometry this large tells qemu to read the size from the footer instead. */
const MAX_GEOMETRY = 65535 * 16 * 255;
/** The largest vpc image qemu creates, 2040 GiB, in sectors. */
const MAX_SECTORS = 0xff000000;

/** The geometry the VHD specification's algorithm picks for `sectors`, which may hold
 * fewer sectors than asked (every division rounds down). Under 65535 x 16 x 63 sectors it tries 17
 * sectors per track with at least 4 heads, then 31 and then 63 with 16 heads, each time the
 * cylinders x heads it needs reach 1024 per head (or would take more than 16 heads); from there up
 * it is 255 sectors per track and 16 heads. qemu keeps heads in a byte, but whenever that wraps
 * more than 16 heads were needed and 31 sectors follow just the same, so plain numbers do here. */
export function vpcGeometry(sectors: number): VpcGeometry {
  const n = Math.min(sectors, MAX_GEOMETRY);
  let perTrack: number;
  let heads: number;
  let cylsTimesHeads: number;
  if (n >= 65535 * 16 * 63) {
    perTrack = 255;
    heads = 16;
    cylsTimesHeads = Math.floor(n / perTrack);
  } else {
    perTrack = 17;
    cylsTimesHeads = Math.floor(n / perTrack);
    heads = Math.max(4, Math.ceil(cylsTimesHeads / 1024));
    if (heads > 16 || cylsTimesHeads >= heads * 1024) {
      perTrack = 31;
      heads = 16;
      cylsTimesHeads = Math.floor(n / perTrack);
    }
    if (cylsTimesHeads >= heads * 1024) {
      perTrack = 63;
      heads = 16;
      cylsTimesHeads = Math.floor(n / perTrack);
    }
  }
  return { cylinders: Math.floor(cylsTimesHeads / heads), heads, sectorsPerTrack: perTrack };
}

export interface VpcGeometry {
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
}

/** The largest geometry, which tells readers to size the disk by the footer's current size. */
export const MAX_VPC_GEOMETRY: VpcGeometry = { cylinders: 65535, heads: 16, sectorsPerTrack: 255 };

const geometrySectors = (sectors: number) => {
  const g = vpcGeometry(sectors);
  return g.cylinders * g.heads * g.sectorsPerTrack;
};

/** The virtual size in bytes of `qemu-img create -f vpc -o subformat=dynamic[,force_size=on] FILE
 * <requested>` as `qemu-img info -f vpc` reports it (subformat=fixed gives the same; without `-f`
 * qemu probes a fixed image, whose only footer is at its end, as raw). The request is first
 * rounded up to whole sectors. With force_size that is the size. Without, qemu tries the geometry
 * of one sector more at a time until one covers the request (capped at the largest geometry) and
 * the image is that geometry's size; only a request the largest geometry cannot hold keeps its own
 * size. Past 2040 GiB qemu refuses. */
export function vpcCreatedSize(requested: number, forceSize: boolean): number {
  if (!Number.isSafeInteger(requested) || requested < 0) {
    throw new RangeError(`not a size in bytes: ${requested}`);
  }
  const sectors = Math.ceil(requested / SECTOR);
  if (sectors > MAX_SECTORS) throw new RangeError(`${requested} bytes: qemu's vpc images stop at 2040 GiB`);
  if (forceSize) return sectors * SECTOR;
  const wanted = Math.min(MAX_GEOMETRY, sectors);
  let covered = 0;
  for (let more = 0; covered < wanted; more++) covered = geometrySectors(wanted + more);
  return covered === MAX_GEOMETRY ? sectors * SECTOR : covered * SECTOR;
}
