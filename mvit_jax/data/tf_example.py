"""tf.train.SequenceExample and the messages it holds, as protobuf classes built without TensorFlow.

Built here from the field numbers of tensorflow/core/example/{feature,example}.proto: importing TensorFlow for its
generated classes costs ~4 s and hundreds of MB in every loader worker, and no maintained package ships them
alone. They live in a private descriptor pool, so they never clash with TensorFlow's own in a process that also
imports it. The wire format is TensorFlow's: these classes parse what tf.io.TFRecordWriter wrote, and back.
"""
from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory

_Field = descriptor_pb2.FieldDescriptorProto


def _message(file, name: str, fields, oneof: str = '', nested=()):
  """Adds message `name` with fields (name, number, type, label, type_name) to `file`."""
  message = file.message_type.add(name=name)
  message.nested_type.extend(nested)
  if oneof:
    message.oneof_decl.add(name=oneof)
  for field_name, number, type_, label, type_name in fields:
    field = message.field.add(name=field_name, number=number, type=type_, label=label, type_name=type_name)
    if oneof:
      field.oneof_index = 0


def _map_entry(name: str, value_type: str) -> descriptor_pb2.DescriptorProto:
  """The nested entry message of a `map<string, value_type>` field."""
  entry = descriptor_pb2.DescriptorProto(name=name)
  entry.options.map_entry = True
  entry.field.add(name='key', number=1, type=_Field.TYPE_STRING, label=_Field.LABEL_OPTIONAL)
  entry.field.add(name='value', number=2, type=_Field.TYPE_MESSAGE, label=_Field.LABEL_OPTIONAL,
                  type_name=value_type)
  return entry


def _build():
  file = descriptor_pb2.FileDescriptorProto(name='mvit_jax/tf_example.proto', package='tensorflow', syntax='proto3')
  optional, repeated = _Field.LABEL_OPTIONAL, _Field.LABEL_REPEATED
  message = _Field.TYPE_MESSAGE
  _message(file, 'BytesList', [('value', 1, _Field.TYPE_BYTES, repeated, None)])
  _message(file, 'FloatList', [('value', 1, _Field.TYPE_FLOAT, repeated, None)])  # proto3: packed.
  _message(file, 'Int64List', [('value', 1, _Field.TYPE_INT64, repeated, None)])
  _message(file, 'Feature', [('bytes_list', 1, message, optional, '.tensorflow.BytesList'),
                             ('float_list', 2, message, optional, '.tensorflow.FloatList'),
                             ('int64_list', 3, message, optional, '.tensorflow.Int64List')], oneof='kind')
  _message(file, 'Features', [('feature', 1, message, repeated, '.tensorflow.Features.FeatureEntry')],
           nested=[_map_entry('FeatureEntry', '.tensorflow.Feature')])
  _message(file, 'FeatureList', [('feature', 1, message, repeated, '.tensorflow.Feature')])
  _message(file, 'FeatureLists', [('feature_list', 1, message, repeated, '.tensorflow.FeatureLists.FeatureListEntry')],
           nested=[_map_entry('FeatureListEntry', '.tensorflow.FeatureList')])
  _message(file, 'Example', [('features', 1, message, optional, '.tensorflow.Features')])
  _message(file, 'SequenceExample', [('context', 1, message, optional, '.tensorflow.Features'),
                                     ('feature_lists', 2, message, optional, '.tensorflow.FeatureLists')])
  pool = descriptor_pool.DescriptorPool()
  pool.Add(file)
  return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f'tensorflow.{name}'))
          for name in ('BytesList', 'FloatList', 'Int64List', 'Feature', 'Features', 'FeatureList', 'FeatureLists',
                       'Example', 'SequenceExample')}


_CLASSES = _build()
BytesList = _CLASSES['BytesList']
FloatList = _CLASSES['FloatList']
Int64List = _CLASSES['Int64List']
Feature = _CLASSES['Feature']
Features = _CLASSES['Features']
FeatureList = _CLASSES['FeatureList']
FeatureLists = _CLASSES['FeatureLists']
Example = _CLASSES['Example']
SequenceExample = _CLASSES['SequenceExample']
