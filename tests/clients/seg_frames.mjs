// Reads a DICOM-SEG the way OHIF does, with @cornerstonejs/adapters (createFromDICOMSegBuffer, dcmjs underneath),
// against its source images, and reports where each SEG frame landed.
//
// usage: node seg_frames.mjs SEG LABELS_OUT SOURCE...
// stdout: JSON {"frames": [[SOPInstanceUID, frame number], ...] (the source frames in order), "segmentsOnFrame":
// [[segment numbers], ...] (same order)}; LABELS_OUT: the label map of each of those frames, uint8, rows x columns.
//
// The source images get cornerstone's own metadata defaults where they lack geometry (ultrasound): orientation
// 1\0\0\0\1\0, position 0\0\0, pixel spacing 1 (@cornerstonejs/metadata imagePlaneCalibrated), and image ids in
// OHIF's DICOMweb form (.../instances/UID/frames/N, frame 1 for a single-frame image).
import { readFileSync, writeFileSync } from "node:fs";
import { adaptersSEG } from "@cornerstonejs/adapters";
import { metaData } from "@cornerstonejs/core";
import dcmjs from "dcmjs";

const [segPath, labelsOut, ...sourcePaths] = process.argv.slice(2);
const { DicomMessage, DicomMetaDictionary } = dcmjs.data;

function read(path) {
  const buffer = readFileSync(path);
  const arrayBuffer = buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength);
  return { arrayBuffer, dataset: DicomMetaDictionary.naturalizeDataset(DicomMessage.readFile(arrayBuffer).dict) };
}

const numbers = (value) => (value === undefined ? undefined : [].concat(value).map(Number));
const instances = new Map(); // image id -> [dataset, frame number]
for (const path of sourcePaths) {
  const { dataset } = read(path);
  delete dataset.PixelData;
  const base = `wadors:/studies/${dataset.StudyInstanceUID}/series/${dataset.SeriesInstanceUID}/instances/` +
    dataset.SOPInstanceUID;
  for (let frame = 1; frame <= (Number(dataset.NumberOfFrames) || 1); frame++) {
    instances.set(`${base}/frames/${frame}`, [dataset, frame]);
  }
}

const provider = (type, imageId) => {
  const found = instances.get(imageId);
  if (!found) return undefined;
  const [ds] = found;
  switch (type) {
    case "instance":
      return ds;
    case "generalImageModule":
      return { sopInstanceUID: ds.SOPInstanceUID, instanceNumber: ds.InstanceNumber };
    case "generalSeriesModule":
      return { seriesInstanceUID: ds.SeriesInstanceUID, modality: ds.Modality };
    case "imagePlaneModule": {
      const orientation = numbers(ds.ImageOrientationPatient) ?? [1, 0, 0, 0, 1, 0];
      const [rowPixelSpacing, columnPixelSpacing] = numbers(ds.PixelSpacing) ?? [1, 1];
      return {
        rows: ds.Rows, columns: ds.Columns, frameOfReferenceUID: ds.FrameOfReferenceUID,
        rowCosines: orientation.slice(0, 3), columnCosines: orientation.slice(3, 6),
        imageOrientationPatient: orientation, imagePositionPatient: numbers(ds.ImagePositionPatient) ?? [0, 0, 0],
        rowPixelSpacing, columnPixelSpacing, pixelSpacing: [rowPixelSpacing, columnPixelSpacing],
      };
    }
    case "imagePixelModule":
      return { rows: ds.Rows, columns: ds.Columns, bitsAllocated: 8, bitsStored: 8, highBit: 7,
        pixelRepresentation: 0, samplesPerPixel: 1, photometricInterpretation: "MONOCHROME2" };
    default:
      return undefined;
  }
};
metaData.addProvider(provider, 10000);
const metadataProvider = { get: (type, imageId) => metaData.get(type, imageId) };

const imageIds = [...instances.keys()];
const result = await adaptersSEG.Cornerstone3D.Segmentation.createFromDICOMSegBuffer(
  imageIds, read(segPath).arrayBuffer, { metadataProvider });
const images = result.labelMapImages[0];
const labels = Buffer.concat(images.map((image) => Buffer.from(
  image.voxelManager.getScalarData())));
writeFileSync(labelsOut, labels);
process.stdout.write(JSON.stringify({
  frames: imageIds.map((id) => [instances.get(id)[0].SOPInstanceUID, instances.get(id)[1]]),
  segmentsOnFrame: imageIds.map((_, index) => result.segmentsOnFrame[index] ?? []),
}) + "\n");
