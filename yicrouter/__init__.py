"""yicrouter: a DIMSE-native DICOM router for regional query/retrieve."""

__version__ = "0.1.0"
